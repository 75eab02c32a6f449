"""The embedded `digits` TFDS dataset: offline build, splits, pixel values."""
import collections

import numpy as np
from sklearn import datasets
import tensorflow_datasets as tfds

from vit_compress import data
from vit_compress.data import digits


def _read(data_dir, split):
  ds = tfds.builder('digits', data_dir=data_dir).as_dataset(split=split)
  images, labels = [], []
  for ex in ds.as_numpy_iterator():
    images.append(ex['image'])
    labels.append(ex['label'])
  return np.stack(images), np.asarray(labels)


def test_builds_offline_with_documented_splits(digits_data_dir):
  builder = tfds.builder('digits', data_dir=digits_data_dir)
  assert builder.is_prepared()
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert sizes == digits.SPLIT_SIZES == {'train': 1442, 'test': 355}
  assert sum(sizes.values()) == 1797
  label = builder.info.features['label']
  assert label.num_classes == 10
  assert label.names == ['zero', 'one', 'two', 'three', 'four', 'five', 'six',
                         'seven', 'eight', 'nine']
  info = data.get_dataset_info('digits', digits_data_dir)
  assert (info.num_classes, info.splits, info.default_eval_split) == (
      10, {'train': 1442, 'test': 355}, 'test')


def test_split_is_stratified_every_fifth_of_each_class(digits_data_dir):
  indices = digits.split_indices()
  assert sorted(np.concatenate([indices['train'], indices['test']])) == list(
      range(1797))
  target = datasets.load_digits().target
  per_class = np.bincount(target, minlength=10)
  _, test_labels = _read(digits_data_dir, 'test')
  counts = collections.Counter(test_labels.tolist())
  assert [counts[c] for c in range(10)] == list(per_class // 5)


def test_images_are_scaled_uint8_copies_of_sklearn(digits_data_dir):
  images, labels = _read(digits_data_dir, 'test')
  assert images.shape == (355, 8, 8, 1) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255
  sk = datasets.load_digits()
  expected = np.round(sk.images[digits.split_indices()['test']] * 255 / 16)
  # TFDS stores examples in its own (hashed) order: compare as sorted sets.
  def as_rows(x, y):
    return sorted(zip(y.tolist(), x.reshape(len(x), -1).tolist()))
  assert as_rows(images, labels) == as_rows(
      expected.astype(np.uint8), sk.target[digits.split_indices()['test']])
