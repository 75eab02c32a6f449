"""Parameters addressed by '/'-joined paths, selected by regular expressions.

The house-wide selection mechanism: frozen parameters, weight-decay masks,
learning-rate multipliers, sharding rules, pruning and quantization targets
all name parameters by a regex over paths such as
'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'.

Regexes are applied with `re.search`, so 'kernel$' selects every kernel and
'^img/' anchors at the root. A regex that selects nothing is almost always a
typo; `require_match` turns that into an error that shows real paths.
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax

PyTree = Any


def _key_name(key) -> str:
  """One path element as text, whatever kind of pytree node produced it."""
  for attr in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey/Flattened
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(key_path: Sequence[Any]) -> str:
  """A jax key path (from `tree_flatten_with_path`) as 'a/b/c'."""
  return '/'.join(_key_name(k) for k in key_path)


def flatten_with_paths(tree: PyTree) -> List[Tuple[str, Any]]:
  """[(path, leaf)] in the tree's leaf order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(path_str(k), leaf) for k, leaf in leaves]


def path_names(tree: PyTree) -> List[str]:
  """All leaf paths, in leaf order."""
  return [path for path, _ in flatten_with_paths(tree)]


def map_with_paths(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
  """Like `jax.tree.map`, but `fn(path, leaf)` also receives the leaf's path."""
  return jax.tree_util.tree_map_with_path(lambda k, x: fn(path_str(k), x), tree)


def compile_regex(pattern: str, what: str = 'regex') -> re.Pattern:
  """re.compile with an error message that says which setting is broken."""
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f'{what}: {pattern!r} is not a valid regular expression '
                     f'({e}).') from None


def match(tree: PyTree, pattern: str) -> PyTree:
  """A pytree of bools: True where the leaf's path matches `pattern` (re.search)."""
  regex = compile_regex(pattern)
  return map_with_paths(lambda path, _: bool(regex.search(path)), tree)


# The name optimiser code reads best with: `regex_mask(params, r'kernel$')`.
regex_mask = match


def matching_paths(tree: PyTree, pattern: str) -> List[str]:
  regex = compile_regex(pattern)
  return [p for p in path_names(tree) if regex.search(p)]


def require_match(tree: PyTree, pattern: str, what: str,
                  examples: int = 6) -> List[str]:
  """The paths `pattern` selects; an error naming the regex if it selects none."""
  found = matching_paths(tree, pattern)
  if not found:
    names = path_names(tree)
    shown = ', '.join(names[:examples]) + (', ...' if len(names) > examples else '')
    raise ValueError(
        f'{what}: regex {pattern!r} matches no parameter. Paths are '
        f"'/'-joined and matched with re.search; some real paths: {shown}.")
  return found


def first_match(path: str, rules: Sequence[Tuple[re.Pattern, Any]],
                default: Any = None) -> Any:
  """The value of the first (compiled regex, value) rule whose regex matches."""
  for regex, value in rules:
    if regex.search(path):
      return value
  return default


def tree_from_flat(flat: Mapping[str, Any],
                   like: Optional[PyTree] = None) -> PyTree:
  """Inverse of `flatten_with_paths`.

  With `like`, returns a tree of exactly `like`'s structure whose leaves are
  `flat[path]` (every path must be present). Without it, builds nested dicts
  by splitting the paths on '/'.
  """
  if like is not None:
    def pick(path, _):
      if path not in flat:
        raise KeyError(f'tree_from_flat: no value for parameter {path!r}.')
      return flat[path]
    return map_with_paths(pick, like)
  nested: Dict[str, Any] = {}
  for path, value in flat.items():
    *parents, last = path.split('/')
    node = nested
    for name in parents:
      node = node.setdefault(name, {})
      if not isinstance(node, dict):
        raise ValueError(f'tree_from_flat: {path!r} goes through a leaf.')
    if last in node:
      raise ValueError(f'tree_from_flat: {path!r} is given twice or is also a prefix.')
    node[last] = value
  return nested
