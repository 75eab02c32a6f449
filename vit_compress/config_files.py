"""How an experiment file finds `configs/common.py`, wherever the file lives.

ml_collections' config_flags loads `--config=path/to/my.py` by its path, not
as a module of a package, so `from configs import common` would only work
when the working directory is this checkout. A config file instead writes

    from vit_compress import config_files
    common = config_files.load_common(__file__)

which takes the `common.py` beside that file when there is one (the
checkout's own configs/, or a fork that copied common.py next to itself and
may have changed it), else the checkout's `configs/common.py`. The same two
lines work in the repository and in a forked copy anywhere, from any
working directory. A config built on another one (lowrank.py on
quickstart.py) finds it the same way, with `load_beside(__file__, name)`.
"""
import importlib.util
import os
import sys
import types
from typing import Dict

COMMON = 'common'
# The checkout's configs/, beside the package (a source or editable install).
CHECKOUT_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
_LOADED: Dict[str, types.ModuleType] = {}


def path_beside(config_file: str, name: str = COMMON) -> str:
  """`<name>.py` for a config file: the one beside it, else the checkout's."""
  filename = f'{name}.py'
  beside = os.path.join(os.path.dirname(os.path.abspath(config_file)), filename)
  for path in (beside, os.path.join(CHECKOUT_CONFIGS, filename)):
    if os.path.isfile(path):
      return os.path.realpath(path)
  raise ImportError(
      f'{config_file} needs configs/{filename}: none beside it and none in '
      f'{CHECKOUT_CONFIGS}. Copy configs/{filename} next to {config_file}.')


def load_beside(config_file: str, name: str) -> types.ModuleType:
  """The module `<name>.py` that `config_file` uses (loaded once per path);
  e.g. configs/lowrank.py builds on quickstart.py this way."""
  path = path_beside(config_file, name)
  if path not in _LOADED:
    module_name = f'_vit_compress_config_{name}_{len(_LOADED)}'
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    _LOADED[path] = module
  return _LOADED[path]


def load_common(config_file: str) -> types.ModuleType:
  """The common.py of `config_file`."""
  return load_beside(config_file, COMMON)


def common_path(config_file: str) -> str:
  return path_beside(config_file, COMMON)
