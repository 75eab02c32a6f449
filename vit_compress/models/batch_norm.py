"""BatchNorm whose running statistics live beside its weights, in 'params'.

Invariant: a BatchNorm model is applied as every other model here,
`module.apply({'params': p}, images)`, so evaluation, PTQ, TFLite/ONNX export
and saved artifacts need nothing new. The running statistics are the leaves
`.../running_mean` and `.../running_var` (PyTorch's names); they are never
trained:

- evaluation (`train=False`) normalises with them (stop_gradient);
- training (`train=True`) normalises with the batch's moments, so their
  gradient is exactly zero, and when the 'batch_stats' collection is mutable
  it writes their exponential moving average there; the train step then puts
  those values into the parameters after the optimiser update
  (`replace_running_stats`), which overrides anything the optimiser did;
- `models.count_params` leaves them out (PyTorch counts them as buffers, so the
  counts equal timm's).

Under `jit` with a data-sharded batch the moments are global-batch moments.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_compress import param_paths

COLLECTION = 'batch_stats'
RUNNING_STATS = r'(^|/)running_(mean|var)$'  # regex over parameter paths

Dtype = Any


class BatchNorm(nn.Module):
  """y = (x - mean) / sqrt(var + eps) * scale + bias over the channel (last) axis."""
  momentum: float = 0.9   # PyTorch's momentum 0.1: new = 0.9 * old + 0.1 * batch
  epsilon: float = 1e-5   # PyTorch's default
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    c = (x.shape[-1],)
    scale = self.param('scale', nn.initializers.ones, c, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, c, self.param_dtype)
    running_mean = self.param('running_mean', nn.initializers.zeros, c,
                              self.param_dtype)
    running_var = self.param('running_var', nn.initializers.ones, c,
                             self.param_dtype)
    if train:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if self.is_mutable_collection(COLLECTION):
        ema = lambda old, new: (self.momentum * old + (1 - self.momentum) *
                                jax.lax.stop_gradient(new)).astype(old.dtype)
        self.put_variable(COLLECTION, 'running_mean', ema(running_mean, mean))
        self.put_variable(COLLECTION, 'running_var', ema(running_var, var))
    else:
      mean = jax.lax.stop_gradient(running_mean).astype(jnp.float32)
      var = jax.lax.stop_gradient(running_var).astype(jnp.float32)
    mul = scale.astype(jnp.float32) * jax.lax.rsqrt(var + self.epsilon)
    add = bias.astype(jnp.float32) - mean * mul
    return (x * mul.astype(x.dtype) + add.astype(x.dtype)).astype(self.dtype)


def replace_running_stats(params, new_stats):
  """`params` with the leaves present in `new_stats` (a 'batch_stats' collection
  tree, same nesting) replaced; `params` itself when there are none."""
  if not new_stats:
    return params
  flat = dict(param_paths.flatten_with_paths(params))
  updates = dict(param_paths.flatten_with_paths(new_stats))
  unknown = sorted(set(updates) - set(flat))
  if unknown:
    raise ValueError(f'batch statistics for unknown parameters: {unknown[:3]}')
  return param_paths.map_with_paths(lambda p, x: updates.get(p, x), params)
