"""ResNet (v2-style, BiT) stems for the R+ViT hybrids, with vit_jax's names.

Weight-standardised convolutions followed by GroupNorm: `conv_root`, `gn_root`,
then stages `block{s}/unit{u}/{conv,gn}{1,2,3,_proj}`. The root downsamples
4x; every stage after the first downsamples 2x more.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


class StdConv(nn.Conv):
  """Convolution whose kernel is standardised (zero mean, unit variance) per output."""

  def param(self, name, *args, **kwargs):
    value = super().param(name, *args, **kwargs)
    if name == 'kernel':
      mean = jnp.mean(value, axis=(0, 1, 2))
      std = jnp.std(value, axis=(0, 1, 2))
      value = (value - mean) / (std + 1e-5)
    return value


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 (4x wider), projection when needed."""
  features: int
  strides: Sequence[int] = (1, 1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, s, name: StdConv(
        f, k, strides=s, use_bias=False, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    gn = lambda name, **kw: nn.GroupNorm(dtype=self.dtype,
                                         param_dtype=self.param_dtype, name=name, **kw)
    residual = x
    if x.shape[-1] != self.features * 4 or tuple(self.strides) != (1, 1):
      residual = conv(self.features * 4, (1, 1), self.strides, 'conv_proj')(x)
      residual = gn('gn_proj')(residual)
    y = nn.relu(gn('gn1')(conv(self.features, (1, 1), (1, 1), 'conv1')(x)))
    y = nn.relu(gn('gn2')(conv(self.features, (3, 3), self.strides, 'conv2')(y)))
    # Zero-initialised last norm: each unit starts as the identity.
    y = gn('gn3', scale_init=nn.initializers.zeros)(
        conv(self.features * 4, (1, 1), (1, 1), 'conv3')(y))
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`num_units` residual units; the first one may be strided."""
  num_units: int
  features: int
  first_stride: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for unit in range(self.num_units):
      x = ResidualUnit(self.features,
                       strides=self.first_stride if unit == 0 else (1, 1),
                       dtype=self.dtype, param_dtype=self.param_dtype,
                       name=f'unit{unit + 1}')(x)
    return x


def hybrid_stem(x, num_layers: Sequence[int], width_factor: float,
                dtype: Dtype, param_dtype: Dtype):
  """Root conv + max-pool, then `num_layers[s]` units per stage (may be empty).

  A function, not a module, so that it is called inside the ViT's compact
  scope and its parameters sit at the ViT's top level, as in vit_jax.
  """
  width = int(64 * width_factor)
  x = StdConv(width, (7, 7), strides=(2, 2), use_bias=False, dtype=dtype,
              param_dtype=param_dtype, name='conv_root')(x)
  x = nn.GroupNorm(dtype=dtype, param_dtype=param_dtype, name='gn_root')(x)
  x = nn.relu(x)
  x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
  for stage, units in enumerate(num_layers):
    x = ResNetStage(units, width * 2**stage, (1, 1) if stage == 0 else (2, 2),
                    dtype=dtype, param_dtype=param_dtype,
                    name=f'block{stage + 1}')(x)
  return x
