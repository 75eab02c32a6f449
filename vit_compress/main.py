"""Command-line entry point.

    python -m vit_compress.main --config=configs/augreg.py:Ti_16 --workdir=/tmp/run \
        [--config.total_steps=1000 --config.batch_size=64 ...]

`config.mode` picks what runs: 'train' (default; resumes from the workdir) or
'recipe' (the chained stages of configs/quickstart.py). Bad input fails before
anything compiles or is written, with one line naming the key and the fix.
"""
import copy
import importlib.util
import os
import sys
import traceback
from typing import Optional

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
flags.DEFINE_bool('resume_with_changes', False,
                  'Rerunning a workdir whose recorded config differs in keys that '
                  'are not safe to change on resume: continue from its latest '
                  'checkpoint under the new config (what no longer fits is '
                  're-initialised) instead of refusing.')
flags.DEFINE_bool('verbose', False, 'Print the traceback behind an error: line.')
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


def error_line(e: BaseException) -> str:
  """The one line a user error prints (a KeyError's message without quotes)."""
  message = e.args[0] if isinstance(e, KeyError) and e.args else e
  return f'error: {message}'


def run(config, workdir: str, resume_with_changes: bool = False,
        verbose: bool = False) -> int:
  """Runs `config.mode`; returns the exit status (2: bad input, explained)."""
  mode = config.get('mode', 'train')
  if resume_with_changes:
    config = copy.deepcopy(config)
    with config.unlocked():
      config.resume_with_changes = True
  try:
    from vit_compress import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    workdir_lib.check_writable_path(workdir)
    MODES.get(mode)(config, workdir)
  except _INPUT_ERRORS as e:
    # A deep traceback would only hide the message (--verbose prints it).
    if verbose:
      traceback.print_exc()
    logging.debug('Traceback:', exc_info=True)
    print(error_line(e), file=sys.stderr)
    return 2
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_dependencies()   # the verbosity is --verbosity's
  sys.exit(run(FLAGS.config, FLAGS.workdir, FLAGS.resume_with_changes,
               FLAGS.verbose))


def config_file_error(spec: str) -> Optional[str]:
  """The error line for a `--config=FILE[:ARG]` that cannot make a config
  (missing file, syntax error, no get_config, an ARG get_config rejects), or
  None; config_flags would report these as tracebacks."""
  path, _, arg = spec.partition(':')
  where = f'--config={spec}'
  if not os.path.isfile(path):
    kind = 'is a directory' if os.path.isdir(path) else 'does not exist'
    return (f'error: {where}: {path} {kind}. Give an experiment config file '
            'and its argument, e.g. --config=configs/augreg.py:Ti_16.')
  with open(path, encoding='utf-8') as f:
    source = f.read()
  try:
    compile(source, path, 'exec')
  except SyntaxError as e:
    return (f'error: {where}: {path} line {e.lineno} has a syntax error '
            f'({e.msg}); fix the file.')
  module_spec = importlib.util.spec_from_file_location('_vit_compress_config', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except (ImportError, NameError, AttributeError) as e:
    return f'error: {where}: importing {path} failed ({type(e).__name__}: {e}).'
  if not callable(getattr(module, 'get_config', None)):
    return (f'error: {where}: {path} defines no get_config(); a config file '
            'defines get_config(arg=None) returning an ml_collections.ConfigDict.')
  try:
    module.get_config(arg) if arg else module.get_config()
  except (ValueError, KeyError, TypeError) as e:
    return f'{error_line(e)} (from {where})'.replace('\n', ' ')
  return None


def _parse_flags(argv):
  """absl's parsing, with a short error for a bad `--config=FILE:ARG` or
  `--config.key=value`.

  config_flags applies overrides to the loaded config; a key the config does
  not have surfaces as a bare AttributeError / KeyError from inside
  ml_collections, a value of another type as a flags error.
  """
  for arg in argv[1:]:
    if arg.startswith('--config='):
      problem = config_file_error(arg[len('--config='):])
      if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)


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
