"""Ops on an example's keys and labels: copy, keep, drop, onehot."""
from typing import Optional

import tensorflow as tf

from vit_compress.data import preprocess

register = preprocess.PP_OPS.register


def _check_keys(keys):
  bad = [k for k in keys if not isinstance(k, str)]
  if not keys or bad:
    raise ValueError(f'give one or more key names as strings, got {keys!r}.')


@register('copy')
def copy(inkey: str, outkey: str):
  """example[outkey] = example[inkey]; e.g. the teacher's view of the image."""
  def op(example):
    example[outkey] = preprocess.get_key(example, inkey, 'copy')
    return example
  return op


@register('keep')
def keep(*keys: str):
  """Keep only these keys (and the internal '_' keys the pipeline needs)."""
  _check_keys(keys)

  def op(example):
    for k in keys:
      preprocess.get_key(example, k, 'keep')
    return {k: v for k, v in example.items() if k in keys or k.startswith('_')}
  return op


@register('drop')
def drop(*keys: str):
  """Remove these keys (missing ones are ignored)."""
  _check_keys(keys)

  def op(example):
    return {k: v for k, v in example.items() if k not in keys}
  return op


@register('onehot')
def onehot(num_classes: Optional[int] = None, key: str = 'label',
           outkey: str = 'labels', on: float = 1.0, off: float = 0.0):
  """Integer label (or a vector of them: multi-hot) -> float32 (num_classes,).

  num_classes defaults to the dataset's number of classes.
  """
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError('onehot needs the number of classes, e.g. onehot(10), or '
                     'a dataset whose label feature knows it; got '
                     f'{num_classes!r}.')

  def op(example):
    label = preprocess.get_key(example, key, 'onehot')
    hot = tf.one_hot(label, num_classes, on_value=on, off_value=off,
                     dtype=tf.float32)
    if label.shape.rank == 1:
      hot = tf.reduce_max(hot, axis=0)
    example[outkey] = hot
    return example
  return op
