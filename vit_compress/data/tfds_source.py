"""TFDS datasets as sources: any dataset prepared under config.data_dir.

A self-preparing dataset (the embedded `digits`) is built on first use, once,
offline; any other dataset must already be prepared, or the error says how
to prepare it. Images stay encoded for the `decode` op.
"""
from typing import List, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_compress import registry
from vit_compress.data import source
from vit_compress.data import splits as splits_lib

COMMON = ('digits', 'cifar10', 'cifar100', 'imagenet2012', 'oxford_iiit_pet',
          'oxford_flowers102', 'caltech101', 'svhn_cropped', 'mnist')


class DatasetNotPreparedError(FileNotFoundError):
  """A known TFDS dataset with no prepared copy in data_dir."""


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
  """A TFDS dataset; images are left encoded for the `decode` op.

  prepare: build the dataset if it is not prepared yet (only for datasets
    that need no download, such as `digits`).
  """

  # Records are whole encoded images: config.shuffle_buffer bounds the memory.
  full_shuffle = False

  def __init__(self, name: str, data_dir: Optional[str] = None,
               prepare: bool = False):
    known = tfds.list_builders(with_community_datasets=False)
    if name.split(':')[0].split('/')[0] not in known:
      raise _unknown_dataset(name, known)
    self.builder = tfds.builder(name, data_dir=data_dir)
    if prepare:
      self.builder = _prepare_once(self.builder, name, data_dir)
    elif not self.builder.is_prepared():
      raise _not_prepared(name, self.builder.data_dir_root)
    features = self.builder.info.features
    label = features['label'] if 'label' in features else None
    names = tuple(label.names) if isinstance(
        label, tfds.features.ClassLabel) else ()
    splits = {k: v.num_examples for k, v in self.builder.info.splits.items()}
    image = features['image'] if 'image' in features else None
    self.info = source.DatasetInfo(
        name=name, num_classes=len(names) or None, class_names=names,
        splits=splits, default_eval_split=splits_lib.default_eval_split(splits),
        image_shape=tuple(getattr(image, 'shape', ())) or None)
    self._decoders = {k: tfds.decode.SkipDecoding() for k, f in
                      features.items() if isinstance(f, tfds.features.Image)}

  def read(self, split: str, shard_index: int = 0,
           num_shards: int = 1) -> Tuple[tf.data.Dataset, int]:
    """Shard `shard_index` of `num_shards` of `split`, and its size."""
    splits_lib.absolute_split(split, self.info.splits)  # a clear error for a bad split
    sub = (tfds.even_splits(split, n=num_shards)[shard_index]
           if num_shards > 1 else split)
    ds = self.builder.as_dataset(
        split=sub, shuffle_files=False, decoders=self._decoders,
        read_config=tfds.ReadConfig(try_autocache=False))
    return ds, self.builder.info.splits[sub].num_examples

  def load(self, example):
    return example

  def undecodable(self, split: str, limit_seconds: float = 60.0) -> List[str]:
    """[]: TFDS records are not files a user can replace."""
    del split, limit_seconds
    return []
