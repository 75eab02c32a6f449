"""Random model parameters and pruning configs shared by the pruning tests."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vit_compress import models
from vit_compress import zoo
from vit_compress.compress import pruning


@functools.lru_cache()
def random_params(name: str = 'Nano_2', seed: int = 0):
  """Random parameters of a zoo model (numpy draws: no XLA compile of init)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), s.dtype),
                      models.param_shapes(zoo.get(name)))


def prune_config(**overrides):
  """`config.prune` with its defaults and `overrides`."""
  config = pruning.default_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def zero_head(params, block: int, head: int):
  """Head `head` of encoder block `block` set to zeros, in place, as structured
  pruning saves it (query/key/value columns and bias, out rows)."""
  attn = params['Transformer'][f'encoderblock_{block}']['MultiHeadDotProductAttention_0']
  for name in ('query', 'key', 'value'):
    attn[name]['kernel'][:, head] = 0
    attn[name]['bias'][head] = 0
  attn['out']['kernel'][head] = 0
  return params
