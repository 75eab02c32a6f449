"""Mixup inside the train step, on the one view teacher and student share.

    batch = mixup.mix(rng, batch, config.mixup)

big_vision's "patient and consistent" distillation mixes each image with
its neighbour in the batch (the batch rolled by one), with a weight drawn
from Beta(p, p). Invariant: the mixing happens once, before either model
runs, and applies the same weight and partner to every image key
(`image`, and a teacher's own `teacher_image` when the pp string makes one)
and to `labels`, so the teacher scores exactly the image the student sees.
`p = 0` (the default) leaves the batch untouched.
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections

IMAGE_KEYS = ('image', 'teacher_image')


def default_config() -> ml_collections.ConfigDict:
  """`config.mixup`."""
  return ml_collections.ConfigDict({
      'p': 0.0,   # Beta(p, p) concentration; 0 turns mixup off (e.g. 0.2, 1.0)
  })


def validate(config: ml_collections.ConfigDict) -> None:
  if not isinstance(config.p, (int, float)) or config.p < 0:
    raise ValueError(f'config.mixup.p={config.p!r} must be >= 0 (0: off; e.g. '
                     '0.2 as in big_vision).')


def mix(rng: jax.Array, batch: Dict[str, Any], config) -> Dict[str, Any]:
  """The batch mixed with itself rolled by one (jittable)."""
  if not config.p:
    return batch
  weight = jax.random.beta(rng, config.p, config.p)
  weight = jnp.maximum(weight, 1.0 - weight)   # the first image dominates
  out = dict(batch)
  for key in IMAGE_KEYS + ('labels',):
    if key in batch:
      x = batch[key]
      mixed = weight * x + (1.0 - weight) * jnp.roll(x, 1, axis=0)
      out[key] = mixed.astype(x.dtype)
  return out
