"""Random model parameters: numpy draws shaped by `models.param_shapes`, so no
XLA compile of init, and nonzero everywhere (init's zero head would hide a
wrong mapping or a pruned head)."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_compress import models
from vit_compress import zoo


def random_params(model='Nano_2', seed: int = 0, scale: float = 0.2):
  """Gaussian parameters (std `scale`) of a zoo model name or a model config.

  By name the tree is cached: treat it as read-only.
  """
  if isinstance(model, str):
    return _zoo_params(model, seed, scale)
  return _draw(model, seed, scale)


@functools.lru_cache()
def _zoo_params(name: str, seed: int, scale: float):
  return _draw(zoo.get(name), seed, scale)


def _draw(config: ml_collections.ConfigDict, seed: int, scale: float):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                      models.param_shapes(config))
