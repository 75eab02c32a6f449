"""What `config.mode` may name: one registry, read by main.py and config_schema.py.

The names live here, low in the package (this imports only the registry), so
`config_schema.validate` checks a mode without importing main. What runs for
each is attached by main.py, the top of the package, with `@runs(name)`:
main may import train and recipe, and nothing here imports them (not even
deferred), so no import circle goes through this module.
"""
import dataclasses
from typing import Callable, Optional

from vit_compress.registry import Registry


@dataclasses.dataclass
class Mode:
  description: str
  run: Optional[Callable] = None   # run(config, workdir); set by main.py


MODES: Registry[Mode] = Registry('mode')
MODES.register('train')(Mode('trains, resuming from the workdir'))
MODES.register('recipe')(Mode('runs the chained stages of config.recipe'))


def runs(name: str) -> Callable[[Callable], Callable]:
  """Attaches a registered mode's `run(config, workdir)`; an unknown name is
  an error at import."""
  def attach(fn: Callable) -> Callable:
    MODES.get(name).run = fn
    return fn
  return attach
