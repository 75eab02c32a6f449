"""A config section completed from its defaults, with misspelled keys caught.

Experiment configs may spell out a whole section (`config.optim`) or only the
keys they change; either way the code that reads the section sees every key.
A key the defaults do not know is a typo until proven otherwise, so it is an
error that lists the valid keys before anything is compiled.
"""
from typing import Any, Mapping, Optional

import ml_collections

from vit_compress.registry import unknown_name_message


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
