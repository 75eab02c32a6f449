"""Command-line entry point.

    python -m vit_compress.main --config=configs/augreg.py:Ti_16 --workdir=/tmp/run \
        [--config.total_steps=1000 --config.batch_size=64 ...]

`config.mode` picks what runs: 'train' (default; resumes from the workdir),
'recipe' (the chained stages of configs/quickstart.py), 'eval' and 'export'.
Bad configs fail here, before anything compiles, with a message naming the key.
"""
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

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


class UserError(Exception):
  """Errors whose message is the whole story (no traceback needed)."""


def _quiet_library_logs():
  """Orbax logs every step of every save at INFO; keep its warnings only."""
  def keep(record):
    return (record.levelno >= std_logging.WARNING
            or '/orbax/' not in record.pathname)
  logging.get_absl_handler().addFilter(keep)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_library_logs()
  config = FLAGS.config
  mode = config.get('mode', 'train')
  try:
    MODES.get(mode)(config, FLAGS.workdir)
  except (ValueError, KeyError, FileNotFoundError, FileExistsError,
          FloatingPointError, TypeError) as e:
    # A config or input problem: the message names it and the fix; a deep
    # traceback would only hide it. (--verbosity=1 logs the traceback too.)
    logging.debug('Traceback:', exc_info=True)
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
