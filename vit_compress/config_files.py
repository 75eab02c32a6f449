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
working directory.
"""
import importlib.util
import os
import sys
import types
from typing import Dict

COMMON = 'common.py'
# The checkout's configs/, beside the package (a source or editable install).
CHECKOUT_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
_LOADED: Dict[str, types.ModuleType] = {}


def common_path(config_file: str) -> str:
  """The common.py a config file uses: its neighbour's, else the checkout's."""
  beside = os.path.join(os.path.dirname(os.path.abspath(config_file)), COMMON)
  for path in (beside, os.path.join(CHECKOUT_CONFIGS, COMMON)):
    if os.path.isfile(path):
      return os.path.realpath(path)
  raise ImportError(
      f'{config_file} needs configs/common.py: none beside it and none in '
      f'{CHECKOUT_CONFIGS}. Copy configs/common.py next to {config_file}.')


def load_common(config_file: str) -> types.ModuleType:
  """The common module of `config_file` (loaded once per path)."""
  path = common_path(config_file)
  if path not in _LOADED:
    name = f'_vit_compress_config_common_{len(_LOADED)}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _LOADED[path] = module
  return _LOADED[path]
