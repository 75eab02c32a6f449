"""Batches for a mesh: the same global batches whatever the topology.

Step k's global batch holds the same examples, augmented the same way, on 1
device, on 8, with data x model parallelism, or over any number of processes:
its rows are examples k*B .. k*B+B-1 of one deterministic stream of the whole
split, and each example's augmentation seed is (config.seed, its index in
that stream). Every process builds that stream of *raw* records (images still
encoded) and keeps the rows of each global batch that its devices hold
(ascending, the order `jax.make_array_from_process_local_data` expects) before
decoding and augmenting them: the expensive work is still split between
processes. The global batch is laid out with NamedSharding(mesh,
P(batch_axes)); processes that hold the same rows build the same local batch.
That layout (which rows a process holds, which batch sizes split evenly) is
sharding.py's; this module calls it.

`config` is a completed experiment config (`config_schema.complete`): fields are
read as they are; their defaults live in `data/defaults.py` only (put in
every experiment config by `config_schema.defaults()`).
The source (sources.py) is asked, never type-tested, for what differs between
datasets (`Source.full_shuffle`, `Source.load`).

The price: every process reads every raw record of the split (other
processes' rows are read, then dropped), i.e. each host reads the *global*
img/s times the record size. Reading is cheap next to decoding and
augmenting, and this is fine up to ImageNet-size TFRecords (ImageNet-1k:
~150 GB, ~110 KB a record) on local disks or GCS in the same region: at
3,000 img/s each host reads ~330 MB/s. Much larger splits or faster
training on slower storage would want per-file sharding instead (batches
that then depend on the process count). `config.cache` caches the whole
split's raw records on every host.

Training streams are infinite and deterministic. Epoch e is the split
shuffled with a seed derived from (config.seed, e); its example p has the
stream index e * n + p. `start_step=k` jumps to step k directly: it starts at
epoch (k * B) // n and skips raw records *before* decoding or augmenting
(cost: reading at most one epoch of raw records).

Evaluation streams visit every example of the split exactly once (example i
is row i % B of batch i // B), then pad to whole batches with zero examples
whose 'mask' is 0 (real ones have 1), so sums weighted by 'mask' count each
example once; every process yields the same number of batches.

Batches: 'image', 'label' (int32), 'labels', 'tokens', ... whatever the pp
string produced, minus strings and '_' keys, plus 'mask' (float32).
"""
import collections
from typing import Dict, Iterator, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from vit_compress.data import preprocess
from vit_compress.data import sources
# The batch layout is sharding.py's; these names stay importable from here.
from vit_compress.sharding import batch_sharding
from vit_compress.sharding import check_batch_size
from vit_compress.sharding import default_mesh  # pylint: disable=unused-import
from vit_compress.sharding import local_rows

AUTOTUNE = tf.data.AUTOTUNE
_FOREVER = 2**62


# ---------------------------------------------------------- tf.data streams
def pp_context(config, info: sources.DatasetInfo) -> Dict[str, object]:
  """Defaults for pp-op arguments: dataset facts, LiT tokenizer settings."""
  context = {'num_classes': info.num_classes,
             'class_names': info.class_names or None,
             'image_shape': info.image_shape}
  for key in ('max_len', 'tokenizer', 'tokenizer_model'):
    context[key] = config.model.get(key)   # set by text-tower models only
  return context


def _base_seed(seed: int) -> tf.Tensor:
  """config.seed as the int64 that starts every stateless seed pair."""
  return tf.constant(int(seed) % 2**62, tf.int64)


def _all_rows(rows: Optional[Sequence[int]], batch: int) -> Tuple[int, ...]:
  rows = tuple(range(batch)) if rows is None else tuple(int(r) for r in rows)
  ascending = all(a < b for a, b in zip(rows, rows[1:]))
  if not rows or not ascending or rows[0] < 0 or rows[-1] >= batch:
    raise ValueError(f'rows must be ascending distinct indices into a batch '
                     f'of {batch}, got {rows}.')
  return rows


def _keep_rows(ds: tf.data.Dataset, rows: Tuple[int, ...],
               batch: int) -> tf.data.Dataset:
  """Keeps the (index, raw example) pairs whose batch row is in `rows`.

  Runs before decoding: a row another process holds costs one record read.
  """
  if len(rows) == batch:
    return ds
  keep = np.zeros(batch, bool)
  keep[list(rows)] = True
  keep = tf.constant(keep)
  return ds.filter(lambda index, _: tf.gather(keep, index % batch))


def _with_seed(base: tf.Tensor, index, example):
  """The example with its augmentation seed (config.seed, stream index)."""
  return {**example, preprocess.RNG_KEY: tf.stack([base, index])}


def _finalize(example, mask: float):
  """Drop internal and string keys; int64 -> int32; add 'mask'."""
  out = {}
  for key, value in example.items():
    if key.startswith('_') or value.dtype == tf.string:
      continue
    if value.dtype == tf.int64:
      value = tf.cast(value, tf.int32)   # jax runs without 64-bit by default
    elif value.dtype == tf.float64:
      value = tf.cast(value, tf.float32)
    out[key] = value
  dropped = sorted(set(example) - set(out) - {preprocess.RNG_KEY})
  if dropped:
    logging.info('Not batched (strings or internal): %s', dropped)
  out['mask'] = tf.constant(mask, tf.float32)
  return out


def _check_fixed_shapes(ds: tf.data.Dataset, pp_name: str) -> None:
  for key, spec in ds.element_spec.items():
    if not spec.shape.is_fully_defined():
      raise ValueError(
          f'{pp_name} gives {key!r} the shape {spec.shape}, which varies '
          'between examples, so they cannot be batched. End the image ops '
          'with a fixed size: resize(S), central_crop(S), random_crop(S) '
          'or inception_crop(S).')


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True   # parallel maps keep the order
  return options


def _config_pp(config, key: str) -> str:
  pp = config[key]
  if not pp:
    raise ValueError(f'config.{key} is missing: a preprocessing string such as'
                     " 'decode|resize(8)|value_range(-1, 1)|onehot'.")
  return pp


def make_train_dataset(config, *, rows: Optional[Sequence[int]] = None,
                       start_step: int = 0, source=None) -> tf.data.Dataset:
  """Endless local training batches from step k: `rows` of each global batch.

  rows: ascending rows of the global batch of config.batch_size that this
    process builds (`local_rows`); None builds whole global batches.
  """
  source = source or sources.get_source(config.dataset, config.data_dir)
  batch = config.batch_size
  rows = _all_rows(rows, batch)
  pp = preprocess.build(_config_pp(config, 'pp_train'),
                        **pp_context(config, source.info))
  split = config.train_split
  raw, n = source.read(split)
  if n == 0:
    raise ValueError(f'Split {split!r} of {config.dataset!r} is empty.')
  if config.cache:
    raw = raw.cache()
  buffer = n if source.full_shuffle else min(n, config.shuffle_buffer)
  base = _base_seed(config.seed)
  first_epoch, offset = divmod(start_step * batch, n)

  def one_epoch(epoch):
    shuffle_seed = tf.random.stateless_uniform(
        [], seed=tf.stack([base, -1 - epoch]), minval=None, maxval=None,
        dtype=tf.int64)
    return raw.shuffle(buffer, seed=shuffle_seed).enumerate().map(
        lambda p, ex: (epoch * n + p, ex))

  ds = tf.data.Dataset.range(first_epoch, _FOREVER).flat_map(one_epoch)
  # Stream index i is row i % batch of global batch i // batch.
  ds = _keep_rows(ds.skip(offset), rows, batch)
  ds = ds.map(lambda i, ex: _finalize(pp(source.load(_with_seed(base, i, ex))),
                                      1.0),
              num_parallel_calls=AUTOTUNE)
  _check_fixed_shapes(ds, 'config.pp_train')
  ds = ds.batch(len(rows), drop_remainder=True).prefetch(AUTOTUNE)
  return ds.with_options(_options())


def make_eval_dataset(config, *, split: Optional[str] = None,
                      rows: Optional[Sequence[int]] = None, source=None
                      ) -> Tuple[tf.data.Dataset, int]:
  """Local evaluation batches (one pass, padded) and their count.

  rows: ascending rows of each global batch of eval_batch_size(config) that
    this process builds; None builds whole global batches.
  """
  source = source or sources.get_source(config.dataset, config.data_dir)
  batch = eval_batch_size(config)
  rows = _all_rows(rows, batch)
  pp = preprocess.build(_config_pp(config, 'pp_eval'),
                        **pp_context(config, source.info))
  split = split or config.eval_split or source.info.default_eval_split
  total = source.info.num_examples(split)
  num_batches = -(-total // batch)
  raw, n = source.read(split)
  if total == 0 or n != total:
    raise ValueError(f'Cannot evaluate split {split!r} of {config.dataset!r}: '
                     f'{total} examples expected, {n} read.')
  base = _base_seed(config.seed)
  ds = _keep_rows(raw.enumerate(), rows, batch)
  ds = ds.map(lambda i, ex: _finalize(pp(source.load(_with_seed(base, i, ex))),
                                      1.0),
              num_parallel_calls=AUTOTUNE)
  _check_fixed_shapes(ds, 'config.pp_eval')
  # The padding rows (stream indices >= total) come after every real row a
  # process keeps, so appending zeros puts each in its place.
  padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
      lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)).repeat()
  ds = ds.concatenate(padding).take(num_batches * len(rows))
  ds = ds.batch(len(rows), drop_remainder=True).prefetch(AUTOTUNE)
  return ds.with_options(_options()), num_batches


def eval_batch_size(config) -> int:
  return config.eval_batch_size or config.batch_size


# ----------------------------------------------------------- global batches
class BatchIterator:
  """Yields dicts of global jax.Arrays; keeps `prefetch` batches on device.

  Attributes: sharding, global_batch_size, num_batches (None = endless).
  """

  def __init__(self, ds: tf.data.Dataset, sharding, global_batch: int,
               prefetch: int = 2, num_batches: Optional[int] = None):
    self.sharding = sharding
    self.global_batch_size = global_batch
    self.num_batches = num_batches
    self._prefetch = max(0, int(prefetch))
    self._batches = self._generate(ds.as_numpy_iterator())

  def _to_global(self, local: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(
        self.sharding, v, (self.global_batch_size,) + v.shape[1:])
            for k, v in local.items()}

  def _generate(self, local_batches) -> Iterator[Dict[str, jax.Array]]:
    queue = collections.deque()
    for local in local_batches:
      # Transfers are asynchronous: queued batches travel while we wait.
      queue.append(self._to_global(local))
      if len(queue) > self._prefetch:
        yield queue.popleft()
    while queue:
      yield queue.popleft()

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, jax.Array]:
    return next(self._batches)

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError('A training iterator is endless.')
    return self.num_batches


def make_train_iterator(config, mesh: Optional[jax.sharding.Mesh] = None, *,
                        start_step: int = 0,
                        batch_axes: Optional[Sequence[str]] = None
                        ) -> BatchIterator:
  """Endless global training batches of config.batch_size, from start_step."""
  sharding = batch_sharding(mesh, batch_axes)
  check_batch_size(config.batch_size, sharding)
  ds = make_train_dataset(config, rows=local_rows(sharding, config.batch_size),
                          start_step=start_step)
  return BatchIterator(ds, sharding, config.batch_size, config.prefetch)


def make_eval_iterator(config, mesh: Optional[jax.sharding.Mesh] = None, *,
                       split: Optional[str] = None,
                       batch_axes: Optional[Sequence[str]] = None
                       ) -> BatchIterator:
  """One pass over `split` (default config.eval_split) with a 'mask'."""
  batch = eval_batch_size(config)
  sharding = batch_sharding(mesh, batch_axes)
  check_batch_size(batch, sharding, 'config.eval_batch_size')
  ds, num_batches = make_eval_dataset(
      config, split=split, rows=local_rows(sharding, batch))
  return BatchIterator(ds, sharding, batch, config.prefetch, num_batches)


def validate_config(config, mesh: Optional[jax.sharding.Mesh] = None,
                    batch_axes: Optional[Sequence[str]] = None
                    ) -> sources.DatasetInfo:
  """Start-up checks of the data settings; returns the DatasetInfo.

  Dataset known and prepared (or a folder that exists), splits valid, every
  pp op known with valid arguments, batch sizes divisible by the processes
  and by the devices the batch is split over. Reads no examples.
  """
  if not config.dataset:
    raise ValueError("config.dataset is missing: e.g. 'digits', 'cifar10', "
                     "'folder:/path/to/root'.")
  info = sources.get_source(config.dataset, config.data_dir).info
  train_split = config.train_split
  eval_split = config.eval_split or info.default_eval_split
  for key, split in (('train_split', train_split), ('eval_split', eval_split)):
    try:
      info.num_examples(split)
    except ValueError as e:
      raise ValueError(f'config.{key}: {e}') from None
  context = pp_context(config, info)
  for key in ('pp_train', 'pp_eval'):
    if config[key]:
      preprocess.build(config[key], **context)
  sharding = batch_sharding(mesh, batch_axes)
  check_batch_size(config.batch_size, sharding)
  check_batch_size(eval_batch_size(config), sharding, 'config.eval_batch_size')
  return info
