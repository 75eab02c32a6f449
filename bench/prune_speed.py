"""Masked vs. shrunk inference speed after structured pruning, on this machine.

Structured pruning only pays when the pruned heads and neurons are physically
removed: a masked model multiplies zeros at full cost. This prunes a model
(random weights; speed does not depend on their values), shrinks it, checks
that both give the same logits, and prints measured img/s next to XLA's FLOP
count for: the dense model, the masked model (zeros in the weights), the
masked model applying its masks in the forward pass (as in training), and the
shrunk model.

    python bench/prune_speed.py                       # Ti_16 at 96 px, batch 32, CPU
    python bench/prune_speed.py --image_size=64 --sparsity=0.67 --method=heads
"""
import math
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vit_compress import models
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import structure
from vit_compress.evaluation.profiling import device_description
from vit_compress.evaluation.profiling import profile

_MODEL = flags.DEFINE_string('model', 'Ti_16', 'Zoo ViT (any width; hybrids too).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 96, 'Input resolution.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Images per forward call.')
_METHOD = flags.DEFINE_enum('method', 'heads_and_neurons',
                            ['heads', 'neurons', 'heads_and_neurons', 'layers'],
                            'Structured pruning method.')
_SPARSITY = flags.DEFINE_float('sparsity', 0.5, 'Fraction of groups removed.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed runs (median reported).')


def _interleaved_seconds(fns, batch, min_run_s: float = 0.3):
  """Median seconds per call of each `(jitted fn, params)`, timed in turns.

  One timed run of every model per round, so load from other processes on a
  shared machine slows all of them alike instead of whichever runs then.
  """
  def call(fn, p):
    return jax.block_until_ready(fn(p, batch))

  calls = {}
  for name, (fn, p) in fns.items():  # compile, warm up, size a run
    call(fn, p)
    start = time.perf_counter()
    call(fn, p)
    calls[name] = max(1, math.ceil(min_run_s / (time.perf_counter() - start)))
  runs = {name: [] for name in fns}
  for _ in range(_REPEATS.value):
    for name, (fn, p) in fns.items():
      start = time.perf_counter()
      for _ in range(calls[name]):
        call(fn, p)
      runs[name].append((time.perf_counter() - start) / calls[name])
  return {name: statistics.median(r) for name, r in runs.items()}


def main(argv):
  del argv
  config = zoo.get(_MODEL.value, image_size=_IMAGE_SIZE.value)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype),
      models.param_shapes(config))
  prune = pruning.default_config()
  prune.method, prune.sparsity = _METHOD.value, _SPARSITY.value
  masks = pruning.update_masks(params, pruning.init_masks(params, prune), 0, prune)
  masked = pruning.apply_masks(params, masks)
  small_params, small_config = structure.shrink(params, masks, config)

  module, small = models.build(config), models.build(small_config)
  images = jnp.asarray(rng.standard_normal((4,) + (_IMAGE_SIZE.value,) * 2 + (3,)),
                       jnp.float32)
  reference = module.apply({'params': masked}, images)
  diff = float(jnp.max(jnp.abs(reference - small.apply({'params': small_params}, images))))

  dense = lambda p, x: module.apply({'params': p}, x)
  rows = [('dense', dense, params), ('masked (zero weights)', dense, masked),
          ('masks in forward',  # as in training: (params, masks) multiplied per call
           lambda state, x: dense(pruning.apply_masks(*state), x), (params, masks)),
          ('shrunk', lambda p, x: small.apply({'params': p}, x), small_params)]
  shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3)
  results = {}  # parameters and XLA FLOPs from the shared profiler
  for name, model, p in rows:
    results[name] = profile(model, p, image_shape=shape, batch_sizes=(_BATCH.value,),
                            repeats=1, min_run_s=0.0)
  for key in ('params', 'nonzero_params'):  # its "params" also held the masks
    results['masks in forward'][key] = results['masked (zero weights)'][key]
  batch = jnp.asarray(rng.standard_normal((_BATCH.value,) + shape), jnp.float32)
  seconds = _interleaved_seconds(
      {name: (jax.jit(model), p) for name, model, p in rows}, batch)
  for name, s in seconds.items():
    results[name]['img_per_s'] = _BATCH.value / s

  t = small_config.transformer
  print(f'{_MODEL.value} at {_IMAGE_SIZE.value} px, batch {_BATCH.value}, '
        f'{_METHOD.value} sparsity {_SPARSITY.value}, on {device_description()}')
  print(f'shrunk: num_layers={t.num_layers} num_heads={t.num_heads} mlp_dim={t.mlp_dim}')
  print(f'max |logits(masked) - logits(shrunk)| = {diff:.2e} '
        f'(logits std {float(jnp.std(reference)):.2f})\n')
  base = results['masked (zero weights)']
  print('| model | params | non-zero | GFLOPs/img | img/s | speedup | FLOP ratio |')
  print('|---|---|---|---|---|---|---|')
  for name, r in results.items():
    print(f"| {name} | {r['params']:,} | {r['nonzero_params']:,} | "
          f"{r['flops'] / 1e9:.3f} | {r['img_per_s']:.1f} | "
          f"{r['img_per_s'] / base['img_per_s']:.2f}x | "
          f"{base['flops'] / r['flops']:.2f}x |")
  print('\nspeedup and FLOP ratio are relative to the masked model '
        f"(median of {_REPEATS.value} timed runs after warm-up, the models taking "
        'turns; FLOPs from XLA cost analysis).')


if __name__ == '__main__':
  app.run(main)
