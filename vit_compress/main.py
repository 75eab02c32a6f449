"""Command-line entry point.

    python -m vit_compress.main --config=configs/augreg.py:Ti_16 --workdir=/tmp/run \
        [--config.total_steps=1000 --config.batch_size=64 ...]

`config.mode` picks what runs: 'train' (default; resumes from the workdir) or
'recipe' (the chained stages of configs/quickstart.py). Bad input fails before
anything compiles or is written, with one line naming the key and the fix.
"""
import copy
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_compress import cli
from vit_compress import logs
from vit_compress.registry import Registry

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/augreg.py:Ti_16.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_bool('resume_with_changes', False,
                  'Rerunning a workdir whose recorded config differs in keys that '
                  'are not safe to change on resume: continue from its latest '
                  'checkpoint under the new config (what no longer fits is '
                  're-initialised) instead of refusing.')
cli.define_verbose()
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


def run(config, workdir: str, resume_with_changes: bool = False,
        verbose: bool = False) -> int:
  """Runs `config.mode`; returns the exit status (2: bad input, explained)."""
  mode = config.get('mode', 'train')
  if resume_with_changes:
    config = copy.deepcopy(config)
    with config.unlocked():
      config.resume_with_changes = True

  def work():
    from vit_compress import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    workdir_lib.check_writable_path(workdir)
    MODES.get(mode)(config, workdir)
  return cli.report(work, verbose)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_dependencies()   # the verbosity is --verbosity's
  sys.exit(run(FLAGS.config, FLAGS.workdir, FLAGS.resume_with_changes,
               FLAGS.verbose))


def _parse_flags(argv):
  """absl's parsing, with a short error for a bad `--config=FILE:ARG` or
  `--config.key=value`.

  config_flags applies overrides to the loaded config; a key the config does
  not have surfaces as a bare AttributeError / KeyError from inside
  ml_collections, a value of another type as a flags error.
  """
  cli.check_config_flag(argv)


  try:
    return FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    if 'must have a value other than None' in str(e):
      print(f'error: {e} E.g. --config=configs/augreg.py:Ti_16 '
            '--workdir=/tmp/run.', file=sys.stderr)
      sys.exit(2)
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
