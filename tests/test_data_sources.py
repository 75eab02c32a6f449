"""Dataset sources by prefix, split helpers, the batch layout's one home, and
imports inside vit_compress/data/ that go one way."""
import ast
import os
import pathlib

from jax.sharding import AbstractMesh, PartitionSpec as P
import numpy as np
import pytest
import tensorflow as tf

from vit_compress import registry
from vit_compress import sharding
from vit_compress.data import folder
from vit_compress.data import pipeline
from vit_compress.data import source
from vit_compress.data import sources
from vit_compress.data import splits
from vit_compress.data import tfds_source

DATA_PACKAGE = pathlib.Path(sources.__file__).parent


def _write_folder(root):
  """train: a (2), b (1); test: a (1), b (1); 4x4 PNGs."""
  for split, classes in {'train': {'a': 2, 'b': 1}, 'test': {'a': 1, 'b': 1}}.items():
    for name, count in classes.items():
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        png = tf.io.encode_png(np.full((4, 4, 3), 7 * i, np.uint8)).numpy()
        with open(os.path.join(root, split, name, f'{i}.png'), 'wb') as f:
          f.write(png)


# ------------------------------------------------------------ the registry
@pytest.mark.parametrize('name, prefix, rest', [
    ('digits', 'digits', 'digits'),
    ('digits:1.0.0', 'digits', 'digits:1.0.0'),
    ('cifar10', 'tfds:', 'cifar10'),
    ('oxford_iiit_pet:4.*.*', 'tfds:', 'oxford_iiit_pet:4.*.*'),
    ('imagenet2012/subset:1.0.0', 'tfds:', 'imagenet2012/subset:1.0.0'),
    ('tfds:mnist', 'tfds:', 'mnist'),
    ('folder:/data/pets', 'folder:', '/data/pets'),
    ('folder:gs://bucket/a:b', 'folder:', 'gs://bucket/a:b'),
])
def test_each_prefix_resolves(name, prefix, rest):
  assert sources.resolve(name) == (prefix, rest)


def test_registered_sources_build_and_follow_the_protocol(digits_data_dir, tmp_path):
  _write_folder(str(tmp_path))
  built = {'digits': sources.get_source('digits', digits_data_dir),
           'tfds:': sources.get_source('tfds:digits', digits_data_dir),
           'folder:': sources.get_source(f'folder:{tmp_path}')}
  assert sorted(built) == sources.SOURCES.names()   # every prefix is covered
  for name, src in built.items():
    assert isinstance(src, source.Source), name
  assert isinstance(built['folder:'], folder.FolderSource)
  assert built['folder:'].info.name == f'folder:{tmp_path}'
  assert built['folder:'].info.splits == {'train': 3, 'test': 2}
  assert built['folder:'].full_shuffle and not built['digits'].full_shuffle
  for name in ('digits', 'tfds:'):
    assert isinstance(built[name], tfds_source.TfdsSource)
    assert built[name].info.splits == {'train': 1442, 'test': 355}
    assert built[name].undecodable('train') == []
  ds, n = built['folder:'].read('train')
  loaded = [built['folder:'].load(ex) for ex in ds]
  assert n == 3 and [int(ex['label']) for ex in loaded] == [0, 0, 1]
  assert tf.io.decode_png(loaded[0]['image']).shape == (4, 4, 3)


def test_unknown_prefix_lists_the_known_ones():
  with pytest.raises(registry.UnknownNameError) as e:
    sources.get_source('foldr:/data/pets')
  message = str(e.value)
  assert "Unknown dataset prefix 'foldr:'" in message
  assert "Did you mean 'folder:'" in message
  assert 'Known: digits, folder:, tfds:.' in message
  assert "config.dataset='foldr:/data/pets'" in message


def test_a_name_that_is_not_a_string_is_refused():
  for bad in ('', None, 3):
    with pytest.raises(ValueError, match='config.dataset must be a dataset name'):
      sources.get_source(bad)


# ------------------------------------------------------------ split helpers
def test_default_eval_split_prefers_test_then_validation():
  assert splits.default_eval_split(['train', 'validation', 'test']) == 'test'
  assert splits.default_eval_split(['train', 'val', 'validation']) == 'validation'
  assert splits.default_eval_split(['train', 'val']) == 'val'
  assert splits.default_eval_split(['train', 'holdout']) == 'holdout'
  assert splits.default_eval_split(['train']) == 'train'


def test_split_strings_select_the_same_rows_for_every_source():
  sizes = {'train': 1442, 'test': 355}
  assert splits.split_size('train[:10%]+test[:100]', sizes) == 144 + 100   # TFDS rounds 10% of 1442 to 144
  parts = splits.absolute_split('train[10%:]', sizes)
  assert [(p.splitname, p.from_, p.to) for p in parts] == [('train', 144, 1442)]
  with pytest.raises(ValueError, match="Bad split 'trian'.*Known splits: test, train"):
    splits.split_size('trian', sizes)


# ------------------------------------------------------------ batch layout
def test_the_batch_layout_has_one_home():
  assert pipeline.batch_sharding is sharding.batch_sharding
  assert pipeline.check_batch_size is sharding.check_batch_size
  assert pipeline.local_rows is sharding.local_rows


def test_check_batch_size_on_a_mesh_or_a_batch_sharding():
  mesh = AbstractMesh((2, 2, 2), ('replica', 'data', 'model'))
  sharding.check_batch_size(4, mesh)    # split over replica x data = 4
  with pytest.raises(ValueError) as e:
    sharding.check_batch_size(6, mesh, 'config.eval_batch_size')
  assert str(e.value).startswith(
      "config.eval_batch_size=6 is not divisible by the 4 devices along mesh "
      "axes ('replica', 'data')")
  assert 'use e.g. 8 (a multiple of 4)' in str(e.value)
  with pytest.raises(ValueError, match=r'config\.batch_size must be a positive '
                     'integer, got 0'):
    sharding.check_batch_size(0, mesh)
  only_data = sharding.batch_sharding(mesh, ['data'])
  assert only_data.spec == P(('data',))
  sharding.check_batch_size(6, only_data)   # 2 devices along 'data'
  with pytest.raises(ValueError, match='divisible by the 2 devices'):
    sharding.check_batch_size(5, only_data)
  with pytest.raises(ValueError, match=r"batch_axes \['rows'\] are not axes"):
    sharding.batch_sharding(mesh, ['rows'])


def test_the_pipeline_has_no_config_defaults_of_its_own():
  """Defaults live in data/defaults.py only: the pipeline reads fields."""
  text = (DATA_PACKAGE / 'pipeline.py').read_text()
  assert 'config.get(' not in text


# ------------------------------------------------------------ imports
def _data_imports(path: pathlib.Path):
  """Modules of vit_compress.data that `path` imports (anywhere in it)."""
  modules = {p.stem for p in DATA_PACKAGE.glob('*.py')}
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    for name in names:
      parts = name.split('.')
      if parts[:2] == ['vit_compress', 'data'] and len(parts) > 2:
        if parts[2] in modules:
          found.add(parts[2])
  found.discard(path.stem)
  return found


def test_no_import_circle_inside_the_data_package():
  graph = {p.stem: _data_imports(p) for p in DATA_PACKAGE.glob('*.py')}
  assert graph['folder'] == {'source', 'splits'}     # the circle this replaced
  assert 'sources' not in graph['folder'] | graph['tfds_source']

  def visit(node, stack):
    assert node not in stack, f'import circle: {" -> ".join(stack + [node])}'
    for nxt in sorted(graph[node]):
      visit(nxt, stack + [node])
  for module in sorted(graph):
    visit(module, [])
