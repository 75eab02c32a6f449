"""What every command does with a user's mistake: one `error:` line, exit 2.

A mistake (a bad flag, path, config value) raises one of `INPUT_ERRORS` with
a message naming the problem and the fix; the command prints it as one line
and exits with status 2 before changing any file. Any other exception is a
bug and keeps its traceback; `--verbose` also prints the traceback behind an
`error:` line.
"""
import importlib.util
import os
import sys
import traceback
from typing import Callable, Optional

from absl import flags
from absl import logging

INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError,
                NotADirectoryError, IsADirectoryError, FloatingPointError,
                TypeError)


def error_line(e: BaseException) -> str:
  """One line: a KeyError's message without quotes, newlines folded."""
  message = e.args[0] if isinstance(e, KeyError) and e.args else e
  return 'error: ' + ' '.join(str(message).split('\n'))


def report(fn: Callable[[], object], verbose: bool = False) -> int:
  """Runs `fn()`; 0, or 2 after printing a user error's one line."""
  try:
    fn()
  except INPUT_ERRORS as e:
    if verbose:
      traceback.print_exc()
    logging.debug('Traceback:', exc_info=True)
    print(error_line(e), file=sys.stderr)
    return 2
  return 0


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
    return f'{error_line(e)} (from {where})'
  return None


def check_config_flag(argv) -> None:
  """Exits 2 with one line if a `--config=FILE[:ARG]` in argv cannot load."""
  for arg in argv[1:]:
    if arg.startswith('--config='):
      problem = config_file_error(arg[len('--config='):])
      if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)


def parse_flags(argv):
  """absl's flag parsing with its errors (a missing required flag, a value
  of the wrong type, an unknown flag) as one `error:` line and exit 2."""
  check_config_flag(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}. Run with --helpfull for every flag.', file=sys.stderr)
    sys.exit(2)


def run_command(main: Callable, flags_parser: Optional[Callable] = None) -> None:
  """`absl.app.run` for a `python -m vit_compress.X` command, after adding
  the CPU defaults of `xla_cpu` to XLA_FLAGS (read once, before the first
  computation). The flags it added are logged once logging is set up."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from vit_compress import xla_cpu  # pylint: disable=g-import-not-at-top
  added = xla_cpu.apply_defaults()

  def with_note(argv):
    if added:
      logging.info('XLA CPU defaults added to XLA_FLAGS: %s (see vit_compress/xla_cpu.py)',
                   ' '.join(added))
    return main(argv)
  app.run(with_note, flags_parser=flags_parser or app.parse_flags_with_usage)


def define_verbose() -> None:
  """The `--verbose` flag every command has (defined once per process)."""
  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'Print the traceback behind an error: line.')


def require(value, flag: str, example: str) -> None:
  """A flag that must be given (absl's required flags exit 1 with a traceback-like note)."""
  if not value:
    raise ValueError(f'--{flag} is required, e.g. --{flag}={example}.')
