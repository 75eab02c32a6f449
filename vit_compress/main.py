"""Command-line entry point.

    python -m vit_compress.main --config=configs/augreg.py:Ti_16 --workdir=/tmp/run \
        [--config.total_steps=1000 --config.batch_size=64 ...]

`config.mode` picks what runs: 'train' (default; resumes from the workdir) or
'recipe' (the chained stages of configs/quickstart.py). Bad input fails before
anything compiles or is written, with one line naming the key and the fix.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_compress import logs
from vit_compress.registry import Registry

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/augreg.py:Ti_16.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])

MODES = Registry('mode')


@MODES.register('train')
def _train(config, workdir):
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  metrics = train.train_and_evaluate(config, workdir)
  logging.info('Finished: %s', metrics)
  print(f'Finished at step {metrics["step"]}: ' + ', '.join(
      f'{k} {v:.4f}' for k, v in metrics.items() if k != 'step'))


@MODES.register('recipe')
def _recipe(config, workdir):
  from vit_compress import recipe  # pylint: disable=g-import-not-at-top
  recipe.run(config, workdir)


# The exceptions a bad config or input raises (their message names the key and
# the fix); anything else is a bug and keeps its traceback.
_INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError,
                 FloatingPointError, TypeError)


def run(config, workdir: str) -> int:
  """Runs `config.mode`; returns the exit status (2: bad input, explained)."""
  mode = config.get('mode', 'train')
  try:
    MODES.get(mode)(config, workdir)
  except _INPUT_ERRORS as e:
    # A deep traceback would only hide the message (--verbosity=1 logs it).
    logging.debug('Traceback:', exc_info=True)
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f'error: {message}', file=sys.stderr)
    return 2
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_dependencies()   # the verbosity is --verbosity's
  sys.exit(run(FLAGS.config, FLAGS.workdir))


def _parse_flags(argv):
  """absl's parsing, with a short error for a bad `--config.key=value`.

  config_flags applies overrides to the loaded config; a key the config does
  not have surfaces as a bare AttributeError / KeyError from inside
  ml_collections, a value of another type as a flags error.
  """
  try:
    return FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    print(f'error: {e}. Give the value in the type of the key (e.g. an '
          'integer for steps, a quoted string for a name).', file=sys.stderr)
  except (AttributeError, KeyError) as e:
    detail = e
    while isinstance(detail, BaseException) and detail.args:
      detail = detail.args[0]   # the KeyError inside the AttributeError
    key, *hint = str(detail).strip().split('\n')
    key = key.strip('"\'')
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    named = [o for o in overrides if o.split('.')[-1] == key] or overrides
    print(f'error: {", ".join(named)}: the config has no key {key!r} there. '
          f'{" ".join(hint)} An override can only change a key the config file '
          'sets; a new key belongs in the config file.', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
