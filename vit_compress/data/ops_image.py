"""Image preprocessing ops: decode, resize, crops, flips, colour and range.

Every op reads and writes `key` ('image' by default). Geometric ops keep the
image's dtype (uint8 stays uint8, rounded), so `value_range` can come last and
the teacher's copy can be resized from the same pixels. Random ops draw their
seed from the example (`preprocess.next_seed`): deterministic per example.
"""
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from vit_compress.data import preprocess

register = preprocess.PP_OPS.register
Size = Union[int, Sequence[int]]

_METHODS = ('area', 'bicubic', 'bilinear', 'gaussian', 'lanczos3', 'lanczos5',
            'mitchellcubic', 'nearest')


def _hw(size: Size) -> Tuple[int, int]:
  """8 -> (8, 8); (8, 12) -> (8, 12)."""
  if isinstance(size, int) and size > 0:
    return size, size
  if (isinstance(size, (tuple, list)) and len(size) == 2
      and all(isinstance(s, int) and s > 0 for s in size)):
    return tuple(size)
  raise ValueError(f'size must be a positive int or (height, width), '
                   f'got {size!r}.')


def _method(method: str) -> str:
  if method not in _METHODS:
    raise ValueError(f'Unknown resize method {method!r}; known: '
                     f'{", ".join(_METHODS)}.')
  return method


def _cast_like(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  if dtype.is_integer:
    image = tf.clip_by_value(tf.round(image), dtype.min, dtype.max)
  return tf.cast(image, dtype)


def _resize(image, hw, method, antialias):
  out = tf.image.resize(image, hw, method=method, antialias=antialias)
  return _cast_like(out, image.dtype)


def _on_key(key: str, name: str, fn):
  """Wraps an image -> image function as an op on example[key]."""
  def op(example):
    example[key] = fn(preprocess.get_key(example, key, name), example)
    return example
  return op


@register('decode')
def decode(channels: int = 3, key: str = 'image',
           image_shape: Optional[Sequence[Optional[int]]] = None):
  """Encoded bytes (PNG, JPEG, GIF, BMP) -> uint8 (H, W, channels).

  channels=3 also turns grayscale files into RGB. An image that is already
  decoded passes through (its channels unchanged; see `to_rgb`).
  `image_shape` (by default the dataset's stored shape of 'image', e.g.
  (8, 8, 1) for digits) gives fixed-size datasets a static height and width.
  """
  if channels not in (1, 3, 4):
    raise ValueError(f'channels must be 1, 3 or 4, got {channels!r}.')
  height, width = (None, None)
  if image_shape is not None and key == 'image':
    height, width = tuple(image_shape)[:2]

  def fn(image, _):
    if image.dtype != tf.string:
      return image
    image = tf.io.decode_image(image, channels=channels,
                               expand_animations=False)
    image.set_shape([height, width, channels])
    return image
  return _on_key(key, 'decode', fn)


@register('resize')
def resize(size: Size, method: str = 'bilinear', antialias: bool = False,
           key: str = 'image'):
  """Resize to `size` (int or (height, width)), ignoring the aspect ratio."""
  hw, method = _hw(size), _method(method)
  return _on_key(key, 'resize',
                 lambda image, _: _resize(image, hw, method, antialias))


@register('resize_small')
def resize_small(size: int, method: str = 'bilinear', antialias: bool = False,
                 key: str = 'image'):
  """Resize so that the shorter side is `size`, keeping the aspect ratio."""
  size, _ = _hw(size)
  method = _method(method)

  def fn(image, _):
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(hw)
    new_hw = tf.cast(tf.round(hw * scale), tf.int32)
    new_hw = tf.maximum(new_hw, size)  # rounding must not undercut `size`
    return _resize(image, new_hw, method, antialias)
  return _on_key(key, 'resize_small', fn)


@register('central_crop')
def central_crop(size: Size, key: str = 'image'):
  """The central (height, width) window."""
  height, width = _hw(size)

  def fn(image, _):
    shape = tf.shape(image)
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    crop = image[top:top + height, left:left + width]
    crop.set_shape([height, width, image.shape[-1]])
    return crop
  return _on_key(key, 'central_crop', fn)


@register('random_crop')
def random_crop(size: Size, key: str = 'image'):
  """A (height, width) window at a uniformly random position."""
  height, width = _hw(size)

  def fn(image, example):
    crop = tf.image.stateless_random_crop(
        image, [height, width, tf.shape(image)[2]],
        seed=preprocess.next_seed(example))
    crop.set_shape([height, width, image.shape[-1]])
    return crop
  return _on_key(key, 'random_crop', fn)


@register('inception_crop')
def inception_crop(size: Size = None, area_min: float = 5,
                   area_max: float = 100, method: str = 'bilinear',
                   antialias: bool = False, key: str = 'image'):
  """Random crop of area_min..area_max % of the image, aspect 3/4..4/3.

  The crop is resized to `size` when given (the usual training choice).
  """
  hw = None if size is None else _hw(size)
  method = _method(method)
  if not 0 < area_min <= area_max <= 100:
    raise ValueError('need 0 < area_min <= area_max <= 100 (percent), got '
                     f'{area_min}, {area_max}.')

  def fn(image, example):
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32),
        seed=preprocess.next_seed(example),
        area_range=(area_min / 100, area_max / 100),
        min_object_covered=0, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    crop.set_shape([None, None, image.shape[-1]])
    return crop if hw is None else _resize(crop, hw, method, antialias)
  return _on_key(key, 'inception_crop', fn)


@register('flip_lr')
def flip_lr(key: str = 'image'):
  """Mirror left-right with probability 1/2."""
  return _on_key(key, 'flip_lr', lambda image, example: (
      tf.image.stateless_random_flip_left_right(
          image, seed=preprocess.next_seed(example))))


@register('to_rgb')
def to_rgb(key: str = 'image'):
  """Grayscale (H, W, 1) -> RGB (H, W, 3); RGB passes through."""
  def fn(image, _):
    if image.shape[-1] == 3:
      return image
    rgb = tf.cond(tf.shape(image)[-1] == 1,
                  lambda: tf.tile(image, [1, 1, 3]), lambda: image)
    rgb.set_shape(image.shape[:-1].concatenate([3]))
    return rgb
  return _on_key(key, 'to_rgb', fn)


@register('value_range')
def value_range(vmin: float = -1, vmax: float = 1, in_min: float = 0,
                in_max: float = 255, clip_values: bool = False,
                key: str = 'image'):
  """Map [in_min, in_max] (pixels 0..255) linearly to [vmin, vmax], float32."""
  if in_max == in_min:
    raise ValueError('in_min and in_max must differ.')

  def fn(image, _):
    image = (tf.cast(image, tf.float32) - in_min) / (in_max - in_min)
    image = vmin + image * (vmax - vmin)
    return tf.clip_by_value(image, vmin, vmax) if clip_values else image
  return _on_key(key, 'value_range', fn)
