"""MLP-Mixer (Tolstikhin et al. 2021) with vit_jax's parameter names.

`stem`, `MixerBlock_{i}/{LayerNorm_0, token_mixing, LayerNorm_1,
channel_mixing}` (each mixing MLP `Dense_0`, `Dense_1`),
`pre_head_layer_norm`, `head`.
"""
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


class MixingMlp(nn.Module):
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype)(x)
    y = nn.gelu(y)
    return nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype)(y)


class MixerBlock(nn.Module):
  """Token mixing (across patches) then channel mixing, each pre-LN residual."""
  tokens_mlp_dim: int
  channels_mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm = lambda: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)
    y = jnp.swapaxes(norm()(x), 1, 2)
    y = MixingMlp(self.tokens_mlp_dim, self.dtype, self.param_dtype,
                  name='token_mixing')(y)
    x = x + jnp.swapaxes(y, 1, 2)
    y = MixingMlp(self.channels_mlp_dim, self.dtype, self.param_dtype,
                  name='channel_mixing')(norm()(x))
    return x + y


class MlpMixer(nn.Module):
  num_classes: Optional[int]
  patch_size: Tuple[int, int]
  hidden_dim: int
  num_blocks: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    del train  # Mixer has no dropout
    x = nn.Conv(self.hidden_dim, self.patch_size, strides=self.patch_size,
                padding='VALID', dtype=self.dtype, param_dtype=self.param_dtype,
                name='stem')(images.astype(self.dtype))
    x = jnp.reshape(x, (x.shape[0], -1, x.shape[-1]))
    for _ in range(self.num_blocks):
      x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim, self.dtype,
                     self.param_dtype)(x)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                     name='pre_head_layer_norm')(x)
    x = jnp.mean(x, axis=1)
    if self.num_classes is None:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    dtype=self.dtype, param_dtype=self.param_dtype,
                    name='head')(x).astype(jnp.float32)
