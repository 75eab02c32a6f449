"""Image folders for users' own data: config.dataset = 'folder:/path/to/root'.

Layout: ROOT/<split>/<class>/<image>.{jpg,jpeg,png} (any case), e.g.
ROOT/train/cat/1.jpg, ROOT/test/dog/7.png. A split is any subdirectory of
ROOT with class subdirectories. Class names are the sorted union of the class
directories of all splits, so a label means the same class in every split.
At start-up every class directory must hold images, and (for local
folders) every file must be readable and start like an image of its extension.
Files are listed in sorted order (the same on every process); shard i of n
is every n-th file starting at i, so each shard sees every class. Split strings take TFDS
slices ('train[:90%]', 'train[90%:]'). Paths may be anything tf.io.gfile reads
(local, gs://).
"""
import os
import time
from typing import Dict, List, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from vit_compress.data import source
from vit_compress.data import splits as splits_lib

PREFIX = 'folder:'   # config.dataset = PREFIX + root
EXTENSIONS = ('.jpg', '.jpeg', '.png')
LAYOUT = 'ROOT/{train,test}/<class>/*.{jpg,jpeg,png}'


def _subdirs(path: str) -> List[str]:
  return sorted(d.rstrip('/') for d in tf.io.gfile.listdir(path)
                if tf.io.gfile.isdir(os.path.join(path, d)))


def _images(path: str) -> List[str]:
  return sorted(os.path.join(path, f) for f in tf.io.gfile.listdir(path)
                if f.lower().endswith(EXTENSIONS))


# The first bytes of the formats decode reads; anything else fails mid-run.
_MAGIC = {'.png': (b'\x89PNG',), '.jpg': (b'\xff\xd8',), '.jpeg': (b'\xff\xd8',)}


def _check_readable(files: List[str]) -> None:
  """Local files only (a few bytes each; object stores would pay a request
  per file): each readable, non-empty and starting as an image of its
  extension does. Truncated images still pass and are met during training."""
  for path in files:
    if '://' in path:
      return
    try:
      with open(path, 'rb') as f:
        head = f.read(8)
    except OSError as e:
      raise ValueError(f'Folder dataset: cannot read {path} ({e.strerror}); fix '
                       'its permissions or remove it.') from None
    kind = os.path.splitext(path)[1].lower()
    if not head.startswith(_MAGIC[kind]):
      what = 'is empty' if not head else f'is not a {kind} image'
      raise ValueError(f'Folder dataset: {path} {what}; remove or replace it.')


class FolderSource:
  """Lists ROOT once; reads files lazily (after shuffling and skipping)."""

  # Records are file names: a whole-split shuffle is cheap.
  full_shuffle = True

  def __init__(self, root: str):
    if not root or not tf.io.gfile.isdir(root):
      raise FileNotFoundError(
          f'Folder dataset root {root!r} does not exist or is not a '
          f'directory. Expected the layout {LAYOUT}, selected with '
          "config.dataset = 'folder:/path/to/root'.")
    split_dirs = [s for s in _subdirs(root)
                  if _subdirs(os.path.join(root, s))]
    class_names = sorted({c for s in split_dirs
                          for c in _subdirs(os.path.join(root, s))})
    label_of = {c: i for i, c in enumerate(class_names)}
    self._files: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for split in split_dirs:
      paths, labels = [], []
      for c in _subdirs(os.path.join(root, split)):
        found = _images(os.path.join(root, split, c))
        if not found:
          raise ValueError(
              f'Folder dataset: class directory {os.path.join(root, split, c)} '
              f'holds no {"/".join(EXTENSIONS)} images. Add images, or remove '
              'the directory (every class needs examples).')
        _check_readable(found)
        paths += found
        labels += [label_of[c]] * len(found)
      if paths:
        self._files[split] = (np.asarray(paths), np.asarray(labels, np.int64))
    if not self._files:
      raise FileNotFoundError(
          f'No images under {root!r}. Expected the layout {LAYOUT}.')
    splits = {k: len(v[0]) for k, v in self._files.items()}
    logging.info('Folder dataset %s: %d classes, splits %s.', root,
                 len(class_names), splits)
    self.info = source.DatasetInfo(
        name=PREFIX + root, num_classes=len(class_names),
        class_names=tuple(class_names), splits=splits,
        default_eval_split=splits_lib.default_eval_split(splits))

  def read(self, split: str, shard_index: int = 0,
           num_shards: int = 1) -> Tuple[tf.data.Dataset, int]:
    """Shard `shard_index` of `num_shards` of `split` (paths), and its size."""
    paths, labels = [], []
    for part in splits_lib.absolute_split(split, self.info.splits):
      all_paths, all_labels = self._files[part.splitname]
      paths.append(all_paths[part.from_:part.to])
      labels.append(all_labels[part.from_:part.to])
    paths = np.concatenate(paths)[shard_index::num_shards]
    labels = np.concatenate(labels)[shard_index::num_shards]
    ds = tf.data.Dataset.from_tensor_slices({'_path': paths, 'label': labels})
    return ds, len(paths)

  def undecodable(self, split: str, limit_seconds: float = 60.0) -> List[str]:
    """Files of `split` that fail to decode (after a read error mid-run; it
    decodes every file, so it gives up after `limit_seconds`)."""
    bad, start = [], time.time()
    for part in splits_lib.absolute_split(split, self.info.splits):
      for path in self._files[part.splitname][0][part.from_:part.to]:
        if time.time() - start > limit_seconds:
          return bad
        try:
          tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
          bad.append(str(path))
    return bad

  def load(self, example):
    example = dict(example)
    example['image'] = tf.io.read_file(example.pop('_path'))
    return example
