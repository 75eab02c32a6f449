"""Where examples come from: a TFDS dataset by name, or an image folder.

`config.dataset` names the source:
  'digits'                the embedded dataset (prepares itself, offline);
  'cifar10', 'imagenet2012', 'oxford_iiit_pet:4.*.*', ...  any TFDS dataset
                          prepared under config.data_dir;
  'folder:/path/to/root'  ROOT/<split>/<class>/*.{jpg,jpeg,png} (folder.py).

A source reads a split (or one shard of it) as a deterministic tf.data
stream of *raw* examples (images still encoded), so that shuffling, skipping,
caching and picking a process's rows (pipeline.py) happen before any
decoding; `load` then finishes an example (reads a file) just before
preprocessing.
"""
import dataclasses
import types
from typing import Dict, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_compress import registry

FOLDER_PREFIX = 'folder:'
SELF_PREPARING = ('digits',)   # no download: built on first use
COMMON = ('digits', 'cifar10', 'cifar100', 'imagenet2012', 'oxford_iiit_pet',
          'oxford_flowers102', 'caltech101', 'svhn_cropped', 'mnist')


class DatasetNotPreparedError(FileNotFoundError):
  """A known TFDS dataset with no prepared copy in data_dir."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a trainer needs to know about a dataset before reading it."""
  name: str
  num_classes: Optional[int]
  class_names: Tuple[str, ...]
  splits: Dict[str, int]          # split name -> number of examples
  default_eval_split: str
  image_shape: Optional[Tuple[Optional[int], ...]] = None  # stored 'image'

  def num_examples(self, split: str) -> int:
    """Size of a split string such as 'train', 'train[:98%]', 'a+b'."""
    return split_size(split, self.splits)


def split_size(split: str, sizes: Dict[str, int]) -> int:
  """Examples selected by a TFDS split string, given the split sizes."""
  return sum(i.to - i.from_ for i in absolute_split(split, sizes))


def absolute_split(split: str, sizes: Dict[str, int]):
  """TFDS split syntax ('train[10%:]+test') -> [(splitname, from_, to)]."""
  infos = {k: types.SimpleNamespace(num_examples=n) for k, n in sizes.items()}
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  except (ValueError, AssertionError) as e:
    raise ValueError(f'Bad split {split!r}: {e} Known splits: '
                     f'{", ".join(sorted(sizes))}; slices look like '
                     "'train[:98%]', 'train[98%:]', 'test[:100]'.") from None
  return [types.SimpleNamespace(
      splitname=i.splitname, from_=i.from_ or 0,
      to=sizes[i.splitname] if i.to is None else i.to) for i in instructions]


def _default_eval_split(splits) -> str:
  for name in ('test', 'validation', 'val'):
    if name in splits:
      return name
  others = [s for s in splits if s != 'train']
  return (others or list(splits))[0]


def _unknown_dataset(name: str, known) -> registry.UnknownNameError:
  close = registry.unknown_name_message('dataset', name, known)
  close = close.split(' Known:')[0]
  return registry.UnknownNameError(
      f'{close} Known: {", ".join(COMMON)}, and the other '
      f'{len(known) - len(COMMON)} TFDS datasets listed by '
      "`tfds.list_builders()`; or 'folder:/path/to/root' for "
      'ROOT/{train,test}/<class>/*.{jpg,jpeg,png}.')


def _not_prepared(name: str, data_dir: str) -> DatasetNotPreparedError:
  base = name.split(':')[0].split('/')[0]
  data_dir = str(data_dir)   # TFDS may hand over a path object
  return DatasetNotPreparedError(
      f'TFDS dataset {name!r} is not prepared in {data_dir!r}. Prepare it '
      'once, on a machine with a network connection (TFDS downloads it):\n'
      f'  tfds build {base} --data_dir={data_dir}\n'
      "or in Python: tfds.builder('" + name + f"', data_dir='{data_dir}')"
      '.download_and_prepare()\n'
      'then set config.data_dir to that directory. Some datasets (e.g. '
      'imagenet2012) need files you download by hand into '
      f'{data_dir}/downloads/manual first; see '
      f'https://www.tensorflow.org/datasets/catalog/{base}')


def _prepare_once(builder, name: str, data_dir: Optional[str]):
  """Builds a self-preparing dataset on first use, in one process only.

  With several processes, process 0 prepares while the others wait at a
  barrier (every process constructs the same sources, so all reach it); a
  host whose data_dir is a local disk still lacks it then, and prepares its
  own copy.
  """
  def prepare(builder):
    logging.info('Preparing %s in %s (offline, once).', name,
                 builder.data_dir_root)
    builder.download_and_prepare()

  multi = jax.process_count() > 1
  if not builder.is_prepared() and (not multi or jax.process_index() == 0):
    prepare(builder)
  if multi:
    multihost_utils.sync_global_devices(f'vit_compress: {name} prepared')
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      prepare(builder)
  return builder


class TfdsSource:
  """A TFDS dataset; images are left encoded for the `decode` op."""

  def __init__(self, name: str, data_dir: Optional[str] = None):
    known = tfds.list_builders(with_community_datasets=False)
    if name.split(':')[0].split('/')[0] not in known:
      raise _unknown_dataset(name, known)
    self.builder = tfds.builder(name, data_dir=data_dir)
    if self.builder.name in SELF_PREPARING:
      self.builder = _prepare_once(self.builder, name, data_dir)
    elif not self.builder.is_prepared():
      raise _not_prepared(name, self.builder.data_dir_root)
    features = self.builder.info.features
    label = features['label'] if 'label' in features else None
    names = tuple(label.names) if isinstance(
        label, tfds.features.ClassLabel) else ()
    splits = {k: v.num_examples for k, v in self.builder.info.splits.items()}
    image = features['image'] if 'image' in features else None
    self.info = DatasetInfo(
        name=name, num_classes=len(names) or None, class_names=names,
        splits=splits, default_eval_split=_default_eval_split(splits),
        image_shape=tuple(getattr(image, 'shape', ())) or None)
    self._decoders = {k: tfds.decode.SkipDecoding() for k, f in
                      features.items() if isinstance(f, tfds.features.Image)}

  def read(self, split: str, shard_index: int = 0,
           num_shards: int = 1) -> Tuple[tf.data.Dataset, int]:
    """Shard `shard_index` of `num_shards` of `split`, and its size."""
    absolute_split(split, self.info.splits)  # a clear error for a bad split
    sub = (tfds.even_splits(split, n=num_shards)[shard_index]
           if num_shards > 1 else split)
    ds = self.builder.as_dataset(
        split=sub, shuffle_files=False, decoders=self._decoders,
        read_config=tfds.ReadConfig(try_autocache=False))
    return ds, self.builder.info.splits[sub].num_examples

  def load(self, example):
    return example


def get_source(name: str, data_dir: Optional[str] = None):
  """The source for config.dataset (see module docstring)."""
  from vit_compress.data import folder  # pylint: disable=g-import-not-at-top
  if not isinstance(name, str) or not name:
    raise ValueError(f'config.dataset must be a dataset name, got {name!r}.')
  if name.startswith(FOLDER_PREFIX):
    return folder.FolderSource(name[len(FOLDER_PREFIX):])
  return TfdsSource(name, data_dir)


def get_dataset_info(config_or_name, data_dir: Optional[str] = None
                     ) -> DatasetInfo:
  """DatasetInfo for a dataset name or a config with .dataset/.data_dir."""
  if isinstance(config_or_name, str):
    return get_source(config_or_name, data_dir).info
  config = config_or_name
  return get_source(config.dataset,
                    data_dir or config.get('data_dir', None)).info
