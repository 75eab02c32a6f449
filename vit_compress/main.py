"""Command-line entry point.

    python -m vit_compress.main --config=configs/augreg.py:Ti_16 --workdir=/tmp/run \
        [--config.total_steps=1000 --config.batch_size=64 ...]

`config.mode` picks what runs: 'train' (default; resumes from the workdir) or
'recipe' (the chained stages of configs/quickstart.py), as registered in
modes.py. Bad input fails before anything compiles or is written, with one
line naming the key and the fix.
"""
import copy
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_compress import cli
from vit_compress import logs
from vit_compress import modes
from vit_compress.modes import MODES

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

_ALIAS_NOTES = []   # what each vit_jax key on the command line set


@modes.runs('train')
def _train(config, workdir):
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  metrics = train.train_and_evaluate(config, workdir)
  logging.info('Finished: %s', metrics)
  print(f'Finished at step {metrics["step"]}: ' + ', '.join(
      f'{k} {v:.4f}' for k, v in metrics.items() if k != 'step'))


@modes.runs('recipe')
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
    MODES.get(mode).run(config, workdir)
  return cli.report(work, verbose)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.quiet_dependencies()   # the verbosity is --verbosity's
  for note in _ALIAS_NOTES:     # set while parsing, before logging was set up
    logging.info(note)
  sys.exit(run(FLAGS.config, FLAGS.workdir, FLAGS.resume_with_changes,
               FLAGS.verbose))


def parse_config_flags(argv, flag_values=FLAGS):
  """absl's parsing of argv, with vit_jax's flat keys (`--config.base_lr=...`).

  Those are not keys of the loaded config, and config_flags can only override
  keys it has, so they are taken out of argv and set after the file loads.
  """
  from vit_compress import config_aliases  # pylint: disable=g-import-not-at-top
  argv, aliased = config_aliases.split_argv(argv)
  # config_flags finds the overrides to apply in sys.argv itself.
  saved, sys.argv = sys.argv, list(argv)
  try:
    parsed = flag_values(argv)
  finally:
    sys.argv = saved
  _ALIAS_NOTES[:] = config_aliases.apply_command_line(flag_values.config, aliased)
  return parsed


def _parse_flags(argv):
  """absl's parsing, with a short error for a bad `--config=FILE:ARG` or
  `--config.key=value`.

  config_flags applies overrides to the loaded config; a key the config does
  not have surfaces as a bare AttributeError / KeyError from inside
  ml_collections, a value of another type as a flags error.
  """
  from vit_compress import config_aliases  # pylint: disable=g-import-not-at-top
  cli.check_config_flag(argv)
  try:
    return parse_config_flags(argv)
  except flags.IllegalFlagValueError as e:
    text = str(e)
    if 'must have a value other than None' in text:
      print(f'error: {e} E.g. --config=configs/augreg.py:Ti_16 '
            '--workdir=/tmp/run.', file=sys.stderr)
    elif 'Error whilst parsing config file' in text:
      # The config file's get_config raised: its last line is the message.
      last = text.strip().splitlines()[-1]
      message = last.split(': ', 1)[1] if ': ' in last else last
      print(f'error: --config={_argv_value(argv, "--config=")}: {message}',
            file=sys.stderr)
    else:
      print(f'error: {e}. Give the value in the type of the key (e.g. an '
            'integer for steps, a quoted string for a name).', file=sys.stderr)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
  except (AttributeError, KeyError) as e:
    detail = e
    while isinstance(detail, BaseException) and detail.args:
      detail = detail.args[0]   # the KeyError inside the AttributeError
    key, *hint = str(detail).strip().split('\n')
    key = key.strip('"\'')
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    named = [o for o in overrides if o.split('.')[-1] == key] or overrides
    from vit_compress import config_schema  # pylint: disable=g-import-not-at-top
    dotted = named[0][len('--config.'):] if len(named) == 1 else key
    # ml_collections' own hint (a close key at the same level) comes first.
    words = hint or [config_aliases.suggest(dotted, config_schema.defaults()).strip()]
    print(f'error: {", ".join(named)}: the config has no key {key!r} there. '
          f'{" ".join(w for w in words if w)} An override can only change a '
          'key the config file sets; a new key belongs in the config file.', file=sys.stderr)
  sys.exit(2)


def _argv_value(argv, prefix: str) -> str:
  return next((a[len(prefix):] for a in argv if a.startswith(prefix)), '')


if __name__ == '__main__':
  cli.run_command(main, flags_parser=_parse_flags)
