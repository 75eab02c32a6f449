"""The package's import graph, read from the source (no import runs): no
circle, and nothing imports the command-line entry point `vit_compress.main`.

Every `import` and `from ... import` counts, including the ones inside
functions (a deferred import still makes the two modules one unit to read).
`from pkg import name` is an edge to `pkg.name` when that is a module, else
to `pkg`; importing a submodule is not counted as importing its package's
`__init__` (every sibling would then form a circle with the package)."""
import ast
import functools
import pathlib
from typing import Dict, List, Optional, Set

PACKAGE = 'vit_compress'
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE

# Circles main has today, each through a deferred (in-function) import. Issue
# #13's branches remove them; empty this set once they are merged. A circle
# that is gone must leave the set (the test says so), and no new one may join.
KNOWN_CYCLES_TO_REMOVE = set()   # circles to remove; none today

ENTRY_POINT = f'{PACKAGE}.main'


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def modules() -> Dict[str, pathlib.Path]:
  return {module_name(p): p for p in sorted(ROOT.rglob('*.py'))}


def imports(name: str, path: pathlib.Path, known: Set[str]) -> Set[str]:
  """The package's modules that module `name` imports."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')[:len(package.split('.')) - node.level + 1]
        source = '.'.join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      for alias in node.names:
        child = f'{source}.{alias.name}'
        out.add(child if child in known else source)
  return {m for m in out if m in known and m != name}


@functools.lru_cache()
def graph() -> Dict[str, Set[str]]:
  found = modules()
  return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
  """The graph's circles: its strongly connected components of more than one
  module (Tarjan), each as one path around it."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        components.append(component)

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return [_path_around(c, edges) for c in components]


def _path_around(component: Set[str], edges: Dict[str, Set[str]]) -> List[str]:
  """A shortest circle through the component's first module (breadth first)."""
  start = min(component)
  parents: Dict[str, Optional[str]] = {start: None}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w in sorted(edges[v] & component):
        if w == start:
          path = [v]
          while parents[path[-1]] is not None:
            path.append(parents[path[-1]])
          return path[::-1] + [start]   # path[-1] is start
        if w not in parents:
          parents[w] = v
          nxt.append(w)
    frontier = nxt
  return sorted(component)


def test_the_reader_sees_the_whole_package():
  edges = graph()
  assert len(edges) > 50 and f'{PACKAGE}.data.pipeline' in edges
  # Absolute, relative and `from pkg import module` imports are all edges.
  assert f'{PACKAGE}.data.folder' in edges[f'{PACKAGE}.data.sources']
  assert f'{PACKAGE}.models.vit' in edges[f'{PACKAGE}.models']


def test_relative_imports_are_edges(tmp_path):
  (tmp_path / '__init__.py').write_text('from . import a\n')
  (tmp_path / 'a.py').write_text('def f():\n  from .sub.b import g\n')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'b.py').write_text('from .. import a\nfrom ..a import f\n')
  known = {'p', 'p.a', 'p.sub', 'p.sub.b'}
  assert imports('p', tmp_path / '__init__.py', known) == {'p.a'}
  assert imports('p.a', tmp_path / 'a.py', known) == {'p.sub.b'}
  assert imports('p.sub.b', tmp_path / 'sub' / 'b.py', known) == {'p.a'}


def test_cycles_finds_a_circle_and_names_its_modules():
  edges = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}, 'e': set()}
  assert cycles(edges) == [['a', 'b', 'c', 'a']]
  assert cycles({'a': {'b'}, 'b': set()}) == []


def test_no_import_circle():
  found = cycles(graph())
  new = [c for c in found if frozenset(c) not in KNOWN_CYCLES_TO_REMOVE]
  assert not new, 'import circles: ' + '; '.join(' -> '.join(c) for c in new)
  gone = KNOWN_CYCLES_TO_REMOVE - {frozenset(c) for c in found}
  assert not gone, f'no longer circles, remove from KNOWN_CYCLES_TO_REMOVE: {gone}'


def test_nothing_imports_the_facades():
  # `checkpoint` (vit_jax's name, with export_optimized on top of edge) sits
  # above the package: its modules import checkpoint_files instead.
  facade = f'{PACKAGE}.checkpoint'
  importers = sorted(m for m, deps in graph().items() if facade in deps)
  assert not importers, f'{importers} import {facade}; use checkpoint_files'


def test_nothing_imports_the_entry_point():
  importers = sorted(m for m, deps in graph().items() if ENTRY_POINT in deps)
  assert not importers, f'{importers} import {ENTRY_POINT}, the top of the path'


def test_old_module_names_are_the_new_modules():
  # Renamed modules stay importable under the names users' code has.
  import importlib  # pylint: disable=g-import-not-at-top
  for old, new in (('paths', 'param_paths'), ('experiment', 'config_schema'),
                   ('eval', 'evaluation'), ('eval.report', 'evaluation.report'),
                   ('eval.classification', 'evaluation.classification'),
                   ('compress.shrink', 'compress.shrink_cli')):
    assert (importlib.import_module(f'{PACKAGE}.{old}')
            is importlib.import_module(f'{PACKAGE}.{new}')), old
