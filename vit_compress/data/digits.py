"""`digits`: the embedded default dataset, a TFDS builder that needs no network.

scikit-learn ships the UCI handwritten digits (E. Alpaydin, 1998): 1,797 real
8x8 grayscale images of the digits 0-9, 10 classes. This builder turns them
into a TFDS dataset so that the quickstart, the notebooks and the tests train
on real images through exactly the same code path as CIFAR or ImageNet.

Splits (deterministic, class-stratified, no random numbers involved): within
each class, taken in the order of scikit-learn's file, every fifth example
(ranks 4, 9, 14, ...) goes to `test`, the rest to `train`.

  train: 1,442 examples    test: 355 examples    total: 1,797

Features: `image` (8, 8, 1) uint8, the 0..16 counts scaled by 255/16 and
rounded to 0..255 (stored PNG-encoded like every TFDS image); `label` a
ClassLabel with names `zero` ... `nine`.

Importing `vit_compress.data` registers the builder, after which
`tfds.builder('digits', data_dir=...)` works; `download_and_prepare()` writes
it (a fraction of a second) from the copy bundled with scikit-learn.
"""
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = ('zero', 'one', 'two', 'three', 'four',
               'five', 'six', 'seven', 'eight', 'nine')
TEST_EVERY = 5   # every fifth example of each class is a test example
SPLIT_SIZES = {'train': 1442, 'test': 355}


def split_indices():
  """{'train': indices, 'test': indices} into scikit-learn's 1,797 digits."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  labels = datasets.load_digits().target
  rank_in_class = np.zeros(len(labels), np.int64)
  for c in range(len(CLASS_NAMES)):
    where = np.flatnonzero(labels == c)
    rank_in_class[where] = np.arange(len(where))
  is_test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
  return {'train': np.flatnonzero(~is_test), 'test': np.flatnonzero(is_test)}


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits as a TFDS dataset (see module doc)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: 1,442 train / 355 test.'}

  # TFDS 4.9.10 finds a builder's file through `importlib_resources`, a
  # package Python >= 3.9 does not install; say where we are instead.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(os.path.abspath(__file__))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage=('https://archive.ics.uci.edu/dataset/80/'
                  'optical+recognition+of+handwritten+digits'),
        license='CC BY 4.0',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {name: self._generate_examples(idx)
            for name, idx in split_indices().items()}

  def _generate_examples(self, indices):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    # 0..16 pixel counts -> 0..255, rounded (16 -> 255 exactly).
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for i in indices:
      yield int(i), {'image': images[i][..., None],
                     'label': int(digits.target[i])}
