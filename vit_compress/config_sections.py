"""The config sections: each registered once with its defaults and validator.

Experiment configs may spell out a whole section (`config.optim`) or only the
keys they change; `config_schema.complete` fills every registered section from
its defaults exactly once, and the code after it reads fields directly
(`config.optim.b1`). A key the defaults do not know is a typo until proven
otherwise, so it is an error that lists the valid keys before anything is
compiled.

Each section registers itself next to the code that reads it, at import
(`register('optim', default_optim_config)` in optim.py). A caller holding a
partial section (a test, a recipe stage's `quant` settings) completes it
through the one public entry point, `complete_section(name, value)`, or a
whole partial config through `complete_sections(config)`.
"""
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional

import ml_collections

from vit_compress.registry import Registry
from vit_compress.registry import unknown_name_message


@dataclasses.dataclass(frozen=True)
class Section:
  name: str                                           # the key: config.<name>
  defaults: Callable[[], ml_collections.ConfigDict]   # every valid key
  validate: Optional[Callable[[Any], Any]] = None     # raises on a bad value


SECTIONS: Registry[Section] = Registry('config section')


def register(name: str, defaults: Callable[[], ml_collections.ConfigDict],
             validate: Optional[Callable[[Any], Any]] = None) -> None:
  """Adds `config.<name>`: its defaults and (optionally) its validator."""
  SECTIONS.register(name)(Section(name, defaults, validate))


def complete_section(name: str, value: Optional[Any],
                     check: bool = True) -> ml_collections.ConfigDict:
  """`config.<name>` completed from its registered defaults (and validated
  unless `check=False`); errors name the key and list the valid ones."""
  section = SECTIONS.get(name)
  out = with_defaults(value, section.defaults(), f'config.{name}')
  if check and section.validate is not None:
    section.validate(out)
  return out


def complete_sections(config: Any) -> ml_collections.ConfigDict:
  """A partial config with every registered section completed (absent ones
  from their defaults) and validated; its other keys as given. For callers
  that build a config by hand; experiment configs go through
  `config_schema.complete`."""
  values: Dict[str, Any] = to_dict(config)
  out = ml_collections.ConfigDict(values, type_safe=False)
  for name in SECTIONS.names():
    out[name] = complete_section(name, values.get(name))
  return out


def to_dict(section: Any) -> dict:
  if section is None:
    return {}
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  if isinstance(section, Mapping):
    return dict(section)
  raise TypeError(f'Expected a ConfigDict or dict, got {type(section).__name__}.')


def with_defaults(section: Optional[Any], defaults: ml_collections.ConfigDict,
                  where: str) -> ml_collections.ConfigDict:
  """`defaults` updated by `section`; an error for a key `defaults` lacks.

  Args:
    section: the user's section (ConfigDict, dict or None for "all defaults").
    defaults: a ConfigDict with every valid key.
    where: the section's name in messages, e.g. 'config.optim'.
  """
  values = to_dict(section)
  known = defaults.to_dict()
  for key in values:
    if key not in known:
      raise ValueError(unknown_name_message(f'key in {where}:', key, known))
    check_type(values[key], known[key], f'{where}.{key}')
  # A plain-dict merge: the user's value wins whatever its type (None for a
  # float, a list for a tuple), which ConfigDict's type checks would refuse.
  return ml_collections.ConfigDict({**known, **values})


def _kind(value) -> Optional[str]:
  if isinstance(value, bool):
    return 'True or False'
  if isinstance(value, (int, float)):
    return 'a number'
  if isinstance(value, str):
    return 'a string'
  return None   # containers and placeholders: checked where they are read


def check_type(value: Any, default: Any, where: str) -> None:
  """A value of another kind than its default's (a number as a string, ...)
  is an error naming the key; None is always allowed (it means "off")."""
  expected = _kind(default)
  if value is None or expected is None or _kind(value) == expected:
    return
  raise ValueError(f'{where}={value!r} must be {expected} (its default is '
                   f'{default!r}).')
