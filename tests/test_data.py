"""The input pipeline: datasets, exact evaluation, resumable training, meshes.

The 8-device and 2-process checks run in subprocesses so that neither
XLA_FLAGS nor jax.distributed leaks into the rest of the test session.
"""
import collections
import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.helpers.processes import free_port, results, start_python
from vit_compress import data
from vit_compress import config_schema
from vit_compress import registry
from vit_compress import zoo

PP_TRAIN = 'decode|inception_crop(8)|flip_lr|value_range(-1, 1)|onehot'
PP_EVAL = 'decode|value_range(-1, 1)|onehot'


def _config(data_dir, **overrides):
  """A completed experiment config (the pipeline reads fields as they are)."""
  config = ml_collections.ConfigDict(dict(
      dataset='digits', data_dir=data_dir, train_split='train',
      eval_split='test', pp_train=PP_TRAIN, pp_eval=PP_EVAL, batch_size=32,
      eval_batch_size=100, seed=0, shuffle_buffer=10_000, prefetch=2,
      cache=False))
  config.update(overrides)
  return config_schema.complete(config)


def _with(config, **overrides):
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.update(overrides)
  return copy


def _rows(images, labels):
  """A multiset of (label, pixels) rows, for order-free comparisons."""
  return collections.Counter(
      (int(y), x.tobytes()) for x, y in zip(np.asarray(images),
                                            np.asarray(labels)))


def _direct(data_dir, split):
  """The split read straight from TFDS, with PP_EVAL's pixel mapping."""
  ds = tfds.builder('digits', data_dir=data_dir).as_dataset(split=split)
  images, labels = [], []
  for ex in ds.as_numpy_iterator():
    rgb = np.repeat(ex['image'], 3, -1).astype(np.float32) / 127.5 - 1
    images.append(tf.constant(rgb).numpy())
    labels.append(ex['label'])
  return _rows(images, labels)


# ------------------------------------------------------------------ splits
def test_eval_counts_every_example_exactly_once(digits_data_dir):
  config = _config(digits_data_dir)
  it = data.make_eval_iterator(config)
  batches = list(it)
  assert len(batches) == len(it) == 4            # ceil(355 / 100)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.shape == (400,) and mask.sum() == 355
  assert (mask[:355] == 1).all() and (mask[355:] == 0).all()
  images = np.concatenate([b['image'] for b in batches])[mask == 1]
  labels = np.concatenate([b['label'] for b in batches])[mask == 1]
  assert _rows(images, labels) == _direct(digits_data_dir, 'test')
  padding = np.concatenate([b['labels'] for b in batches])[mask == 0]
  assert not padding.any()
  b = batches[0]
  assert b['image'].shape == (100, 8, 8, 3) and b['image'].dtype == np.float32
  assert b['label'].dtype == np.int32 and b['labels'].shape == (100, 10)
  np.testing.assert_array_equal(np.argmax(b['labels'], -1), b['label'])


def test_one_training_epoch_is_a_permutation(digits_data_dir):
  config = _config(digits_data_dir, pp_train=PP_EVAL, batch_size=206)
  it = data.make_train_iterator(config)
  batches = [next(it) for _ in range(7)]        # 7 * 206 = 1442 = one epoch
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert _rows(images, labels) == _direct(digits_data_dir, 'train')
  assert len(set(labels[:206].tolist())) == 10   # shuffled, not class-sorted


def test_train_iterator_resumes_at_step_k(digits_data_dir):
  config = _config(digits_data_dir, batch_size=64)   # 22.5 steps per epoch
  it = data.make_train_iterator(config)
  uninterrupted = [next(it) for _ in range(30)]
  resumed = data.make_train_iterator(config, start_step=20)
  for step in range(20, 30):          # crosses the epoch boundary at 22.5
    got = next(resumed)
    for key in ('image', 'label', 'labels', 'mask'):
      np.testing.assert_array_equal(got[key], uninterrupted[step][key])
  other_seed = next(data.make_train_iterator(
      _config(digits_data_dir, batch_size=64, seed=1)))
  assert not np.array_equal(other_seed['image'], uninterrupted[0]['image'])
  assert not np.array_equal(uninterrupted[0]['image'],
                            uninterrupted[23]['image'])


_PP_CALLS = collections.Counter()


@data.PP_OPS.register('count_calls_for_test')
def _count_calls_for_test():
  """Counts the examples that reach preprocessing (a test-only op)."""
  def bump(label):
    _PP_CALLS['n'] += 1
    return label

  def op(example):
    example['label'] = tf.py_function(bump, [example['label']], tf.int64)
    example['label'].set_shape([])
    return example
  return op


def test_resuming_preprocesses_only_the_batches_it_yields(digits_data_dir):
  config = _config(digits_data_dir, prefetch=0,
                   pp_train='count_calls_for_test|' + PP_TRAIN)
  _PP_CALLS.clear()
  resumed = data.make_train_iterator(config, start_step=200)  # 4.4 epochs
  batch = next(resumed)
  assert batch['image'].shape == (32, 8, 8, 3)
  # 200 * 32 = 6,400 examples were skipped before decoding; only the yielded
  # batch and tf.data's read-ahead went through the pp ops.
  assert 32 <= _PP_CALLS['n'] < 1000


def test_lit_batches_carry_tokenized_captions(digits_data_dir):
  config = _config(
      digits_data_dir, model=zoo.get('LiT_Nano'),
      pp_train='decode|value_range(-1, 1)|captions("digits")|tokenize')
  batch = next(data.make_train_iterator(config))
  assert 'texts' not in batch                       # strings are not batched
  tokens = np.asarray(batch['tokens'])
  assert tokens.shape == (32, 16) and tokens.dtype == np.int32
  table = data.caption_texts(data.digits.CLASS_NAMES, 'digits')
  tok = data.get_tokenizer('bytes', 16)
  drawn = set()
  for row, label in zip(tokens, np.asarray(batch['label'])):
    # Some caption of this label, cut to 15 bytes + end-of-text.
    matches = [t for t in table[label] if np.array_equal(tok(t)[0], row)]
    assert matches
    drawn.add(matches[0][:7])
    text = bytes(int(t) - 2 for t in row[:list(row).index(1)]).decode()
    assert matches[0].startswith(text)
  assert len(drawn) > 1


# ----------------------------------------------------------------- folders
def _write_folder(root):
  """train: cat (3), dog (2); test: cat, dog, emu; pixel value = class."""
  value = {'cat': 10, 'dog': 100, 'emu': 200}
  layout = {'train': {'cat': 3, 'dog': 2}, 'test': {'cat': 1, 'dog': 1,
                                                    'emu': 2}}
  for split, classes in layout.items():
    for name, count in classes.items():
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        size = (6 + i, 5 + 2 * i, 3)     # sizes differ between files
        png = tf.io.encode_png(np.full(size, value[name], np.uint8)).numpy()
        ext = '.PNG' if i == 1 else '.png'
        with open(os.path.join(root, split, name, f'{i}{ext}'), 'wb') as f:
          f.write(png)
  with open(os.path.join(root, 'train', 'cat', 'notes.txt'), 'w') as f:
    f.write('not an image')
  return value


def test_folder_dataset_labels_and_class_names(tmp_path):
  value = _write_folder(str(tmp_path))
  info = data.get_dataset_info(f'folder:{tmp_path}')
  assert info.class_names == ('cat', 'dog', 'emu') and info.num_classes == 3
  assert info.splits == {'train': 5, 'test': 4}
  config = _config(None, dataset=f'folder:{tmp_path}', batch_size=2,
                   eval_batch_size=3, pp_eval='decode|resize(4)|onehot')
  assert data.validate_config(config) == info
  batches = list(data.make_eval_iterator(config))
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])[mask == 1]
  labels = np.concatenate([b['label'] for b in batches])[mask == 1]
  assert mask.sum() == 4 and sorted(labels.tolist()) == [0, 1, 2, 2]
  for image, label in zip(images, labels):
    assert (image == value[info.class_names[label]]).all()
  train = next(data.make_train_iterator(
      _with(config, pp_train='decode|random_crop(4)|flip_lr')))
  assert set(np.asarray(train['label']).tolist()) <= {0, 1}   # no emu in train
  with pytest.raises(ValueError, match='varies between examples'):
    data.make_eval_dataset(_with(config, pp_eval='decode|onehot'))


# ------------------------------------------------------------------ errors
def test_misspelled_names_fail_at_start_up_listing_known_ones(
    digits_data_dir, tmp_path):
  with pytest.raises(registry.UnknownNameError) as e:
    data.validate_config(_config(digits_data_dir, dataset='digts'))
  assert "Did you mean 'digits'" in str(e.value)
  assert 'cifar10' in str(e.value) and 'folder:' in str(e.value)
  with pytest.raises(registry.UnknownNameError) as e:
    data.validate_config(_config(digits_data_dir,
                                 pp_train='decode|inception_crp(8)'))
  assert "Did you mean 'inception_crop'" in str(e.value)
  assert 'value_range' in str(e.value) and 'flip_lr' in str(e.value)
  with pytest.raises(ValueError, match="config.train_split.*'trian'"):
    data.validate_config(_config(digits_data_dir, train_split='trian'))
  with pytest.raises(FileNotFoundError, match='train,test'):
    data.validate_config(_config(None, dataset=f'folder:{tmp_path}/none'))
  with pytest.raises(ValueError, match='positive integer'):
    data.validate_config(_config(digits_data_dir, batch_size=0))


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError) as e:
    data.get_dataset_info('mnist', str(tmp_path))
  assert f'tfds build mnist --data_dir={tmp_path}' in str(e.value)
  assert 'network' in str(e.value)


# ----------------------------------------------------- meshes and processes
EIGHT_DEVICES = r'''
import json, os, sys
import jax, numpy as np, ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P
from vit_compress import data
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
assert jax.device_count() == 8
mesh = data.default_mesh()
batch = next(data.make_train_iterator(config, mesh))
expected = next(data.make_train_dataset(config).as_numpy_iterator())
image = batch['image']
out = {'shape': image.shape,
       'equivalent': image.sharding.is_equivalent_to(
           NamedSharding(mesh, P('data')), image.ndim),
       'shards': sorted(s.data.shape[0] for s in image.addressable_shards),
       'values_match': all(np.array_equal(batch[k], expected[k])
                           for k in expected),
       'shard_rows_match': all(
           np.array_equal(s.data, expected['image'][s.index])
           for s in image.addressable_shards)}
# A (data=4, model=2) mesh: the batch is split over 'data' only.
mesh2 = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2),
                          ('data', 'model'))
ev = next(data.make_eval_iterator(config, mesh2))['image']
out['eval_spec_is_data'] = ev.sharding.spec == P('data')
out['eval_shards'] = sorted(s.data.shape[0] for s in ev.addressable_shards)
config.batch_size = 12
try:
  data.validate_config(config, mesh)
except ValueError as e:
  out['error'] = str(e)
print('RESULT ' + json.dumps(out), flush=True)
os._exit(0)   # skip TensorFlow's slow interpreter teardown
'''


@pytest.mark.slow
def test_batches_are_sharded_over_8_forced_cpu_devices(digits_data_dir):
  config = _config(digits_data_dir, batch_size=32, eval_batch_size=40)
  out, = results([start_python(
      EIGHT_DEVICES, json.dumps(config.to_dict()),
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})])
  assert out['shape'] == [32, 8, 8, 3]
  assert out['equivalent'] and out['shards'] == [4] * 8
  assert out['values_match'] and out['shard_rows_match']
  assert out['eval_spec_is_data']
  assert out['eval_shards'] == [10] * 8        # 40 / 4, replicated on model
  assert 'divisible by the 8 devices' in out['error'] and 'e.g. 16' in out[
      'error']


TWO_PROCESSES = r'''
import json, os, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, rank, config_json = sys.argv[1:4]
jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2,
                           process_id=int(rank))
import jax.numpy as jnp, ml_collections, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from vit_compress import data
config = ml_collections.ConfigDict(json.loads(config_json))
mesh = data.default_mesh()
replicated = NamedSharding(mesh, P())

@jax.jit
def sums(b):
  m = b['mask']
  return jax.lax.with_sharding_constraint(jnp.stack([
      (b['image'] * m[:, None, None, None]).sum(), (b['label'] * m).sum(),
      m.sum()]), replicated)

train = next(data.make_train_iterator(config, mesh))
totals = np.zeros(3)
for batch in data.make_eval_iterator(config, mesh):
  totals += np.asarray(sums(batch), np.float64)
print('RESULT ' + json.dumps({
    'devices': [jax.device_count(), jax.local_device_count()],
    'shape': train['image'].shape,
    'local_rows': [s.data.shape[0] for s in train['image'].addressable_shards],
    'local_sums': [[s.index[0].start or 0, float(np.asarray(s.data).sum())]
                   for s in train['image'].addressable_shards],
    'train': np.asarray(sums(train), np.float64).tolist(),
    'eval': totals.tolist()}), flush=True)
jax.distributed.shutdown()
os._exit(0)   # skip TensorFlow's slow interpreter teardown
'''


@pytest.mark.slow
def test_two_processes_assemble_the_global_batch(digits_data_dir):
  config = _config(digits_data_dir, batch_size=32, eval_batch_size=100)
  port = free_port()
  outs = results([
      start_python(TWO_PROCESSES, port, rank, json.dumps(config.to_dict()))
      for rank in (0, 1)])
  # Expected, computed here in one process: the global batch does not depend
  # on the number of processes (each builds its half of the same batch).
  train = next(data.make_train_dataset(config).as_numpy_iterator())
  expected_train = [float(train['image'].sum()), float(train['label'].sum()),
                    32.0]
  totals = np.zeros(3)
  for b in data.make_eval_iterator(config):
    m = np.asarray(b['mask'])
    totals += [float((np.asarray(b['image']) * m[:, None, None, None]).sum()),
               float((np.asarray(b['label']) * m).sum()), m.sum()]
  for out in outs:
    assert out['devices'] == [2, 1]
    assert out['shape'] == [32, 8, 8, 3] and out['local_rows'] == [16]
    np.testing.assert_allclose(out['train'], expected_train, rtol=1e-5)
    (start, local_sum), = out['local_sums']
    np.testing.assert_allclose(
        local_sum, train['image'][start:start + 16].sum(), rtol=1e-5)
    np.testing.assert_allclose(out['eval'], totals, rtol=1e-5)
  assert outs[0]['eval'][2] == 355
  assert {r['local_sums'][0][0] for r in outs} == {0, 16}


def test_a_process_builds_its_rows_of_the_same_global_batches(
    digits_data_dir):
  """Any split of the rows (as meshes and processes make) rebuilds the same
  global batches: same examples, same augmentation, also after resuming."""
  config = _config(digits_data_dir, batch_size=8, eval_batch_size=100)
  rows = ((0, 2, 4, 6), (1, 3, 5, 7))
  whole = data.make_train_dataset(config, start_step=178).as_numpy_iterator()
  parts = [data.make_train_dataset(config, rows=r, start_step=178
                                   ).as_numpy_iterator() for r in rows]
  for _ in range(3):         # 178 * 8 = 1424: crosses the epoch end at 1442
    expected = next(whole)
    for r, part in zip(rows, parts):
      got = next(part)
      for key in ('image', 'label', 'mask'):
        np.testing.assert_array_equal(got[key], expected[key][list(r)])
  whole, num_batches = data.make_eval_dataset(config)
  halves = [data.make_eval_dataset(config, rows=r)[0]
            for r in (range(50), range(50, 100))]
  for expected, top, bottom in zip(*[d.as_numpy_iterator()
                                     for d in [whole] + halves]):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(
          np.concatenate([top[key], bottom[key]]), expected[key])
  assert num_batches == 4 and expected['mask'].sum() == 55  # 355 - 300
  with pytest.raises(ValueError, match='ascending'):
    data.make_train_dataset(config, rows=(3, 1))
