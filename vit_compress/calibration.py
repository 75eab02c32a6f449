"""Calibration images: training images with the eval preprocessing.

Static int8 scales (qwix PTQ, TFLite full-integer, ONNX static) are fitted
on what the model sees at inference: the train split (`config.train_split`,
default 'train') read as the eval split is, no augmentation, padding
examples dropped. Every calibrated export and stage takes its images here.
"""
from typing import Dict, Iterator, List

import numpy as np


def _real_batches(config) -> Iterator[np.ndarray]:
  """Each eval batch of the train split, as host images without padding."""
  from vit_compress import data  # pylint: disable=g-import-not-at-top
  split = config.get('train_split', 'train')
  for batch in data.make_eval_iterator(config, split=split):
    real = np.asarray(batch['mask']) > 0
    yield np.asarray(batch['image'])[real]


def batches(config, limit: int) -> Iterator[Dict[str, np.ndarray]]:
  """At most `limit` batches {'image': (B, H, W, 3)} (qwix calibration)."""
  for i, images_ in enumerate(_real_batches(config)):
    if i == limit:
      return
    yield {'image': images_}


def images(config, limit: int) -> List[np.ndarray]:
  """Whole eval batches of images until at least `limit` are read (or the
  split ends); `np.concatenate(...)[:limit]` gives exactly `limit`."""
  out, seen = [], 0
  for chunk in _real_batches(config):
    out.append(chunk)
    seen += len(chunk)
    if seen >= limit:
      break
  return out
