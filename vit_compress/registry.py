"""Registries by name: the one way configs pick models, losses, ops, criteria.

A config names what it wants (`config.loss = 'kd'`); an unknown name is an
error that lists the known ones, and suggests the closest, so a typo never
surfaces as a KeyError deep inside a jitted function.
"""
import difflib
from typing import Callable, Dict, Generic, Iterable, TypeVar

T = TypeVar('T')


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
  """'Unknown loss 'kdd'. Did you mean 'kd'? Known: ...' — shared by all checks."""
  known = sorted(known)
  close = difflib.get_close_matches(str(name), known, n=3)
  hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
  return f'Unknown {kind} {name!r}.{hint} Known: {", ".join(known)}.'


class UnknownNameError(KeyError, ValueError):
  """A name that no registry, zoo or option knows; str() is the readable message."""

  def __str__(self):
    return self.args[0] if self.args else ''


class Registry(Generic[T]):
  """A dict of named things with a decorator to add to it."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(item: T) -> T:
      if name in self._items:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._items[name] = item
      return item
    return add

  def get(self, name: str) -> T:
    if name not in self._items:
      raise UnknownNameError(unknown_name_message(self.kind, name, self._items))
    return self._items[name]

  def names(self):
    return sorted(self._items)

  def __contains__(self, name) -> bool:
    return name in self._items
