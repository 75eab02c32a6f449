r"""Training throughput and model-FLOPs utilisation (MFU) of the real train step.

    python bench/train_speed.py     # Ti_16, 12 and 6 layers, 32/64/96 px, batch 32
    python bench/train_speed.py --config=configs/augreg.py:B_16 --depths= \
        --image_sizes=224 --batch_size=256 --dtype=bfloat16     # on an accelerator

For each (depth, image size) this builds the step that
`train.train_and_evaluate` runs: the config (default configs/augreg.py's
vit_jax fine-tuning recipe: SGD momentum, clipping, softmax cross-entropy)
through `train.prepare`, `make_init_fn` / `make_train_step` /
`optim.make_optimizer`, the state created sharded, the step jitted with the
same shardings and donated state. It runs on a synthetic batch of the right
shape (random images and labels): compiled, warmed up, then `steps` timed
steps, each blocked on; the table shows the median.

FLOPs per image, both from XLA's cost analysis of compiled programs
(a multiply-add counts 2):
  model  3 x the forward pass (train mode) -- forward plus a backward of
         twice its cost, the usual numerator of MFU (PaLM's definition);
  step   the whole compiled step: forward, backward, clipping, optimiser.
Peak: a jitted N x N matmul (2 N^3 FLOPs) in float32 and bfloat16, timed in
the same run on the same device. MFU = model FLOP/s / peak of the compute
dtype; "XLA util." uses the step's FLOPs instead.
"""
import os
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

import machine
import train_step
from vit_compress import train
from vit_compress.evaluation import profiling

_AUGREG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs',
                       'augreg.py')
config_flags.DEFINE_config_file('config', f'{_AUGREG}:Ti_16',
                                'Experiment config (model, optimiser, loss, mesh).')
_DEPTHS = flags.DEFINE_list('depths', ['12', '6'],
                            'Encoder depths to time (empty: the config\'s own).')
_SIZES = flags.DEFINE_list('image_sizes', ['32', '64', '96'], 'Input resolutions.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Global batch per step.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (the median is shown).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'Compute dtype of the model (parameters stay float32).')
_MATMUL = flags.DEFINE_integer('matmul_size', 0,
                               'N of the peak matmul (0: 2048 on CPU, 8192 else).')


def _median_seconds(fn, runs: int) -> float:
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_flops(dtype, n: int, runs: int = 5) -> float:
  """FLOP/s of a jitted n x n matmul (warmed up; median of `runs`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  return 2 * n**3 / _median_seconds(lambda: matmul(a, b), runs)


def measure(depth, image_size: int):
  """One row: tokens, seconds per step, model and step FLOPs per image."""
  step, state, batch, module, m = train_step.build(
      flags.FLAGS.config, _BATCH.value, image_size, _DTYPE.value, depth)
  b = _BATCH.value
  compiled = step.lower(state, batch, {}).compile()
  forward = jax.jit(lambda p, x: train.model_outputs(
      module, m, p, x, train=True, rng=jax.random.key(1))['logits'])
  forward_flops = profiling.compiled_flops(forward.lower(state['params'], batch).compile())

  for _ in range(_WARMUP.value):
    state, _ = compiled(state, batch, {})
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, {})
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics['loss'])):
    raise FloatingPointError(f'Non-finite loss at depth {depth}, {image_size} px.')
  tokens = (image_size // m.patches.size[0]) ** 2 + 1
  return {'layers': m.transformer.num_layers, 'px': image_size, 'tokens': tokens,
          'seconds': statistics.median(times), 'model_flops': 3 * forward_flops / b,
          'step_flops': profiling.compiled_flops(compiled) / b}


def main(argv):
  del argv
  print(machine.describe())
  print(f'start: {machine.load()}')
  n = _MATMUL.value or (2048 if jax.default_backend() == 'cpu' else 8192)
  peaks = {d: peak_flops(d, n) for d in (jnp.float32, jnp.bfloat16)}
  depths = [int(d) for d in _DEPTHS.value] or [None]
  rows = [measure(d, int(s)) for d in depths for s in _SIZES.value]
  peaks = {d: max(p, peak_flops(d, n)) for d, p in peaks.items()}  # again after
  peak = peaks[jnp.bfloat16 if _DTYPE.value == 'bfloat16' else jnp.float32]

  c = flags.FLAGS.config
  print(f'end: {machine.load()}\n')
  print(f'{c.model.name} width {c.model.hidden_size}, {_DTYPE.value}, batch '
        f'{_BATCH.value}, optimiser {c.optim.name}; median of {_STEPS.value} steps '
        f'after {_WARMUP.value} warm-up steps')
  print(f'peak ({n}x{n} matmul, best of before/after): float32 '
        f'{peaks[jnp.float32] / 1e9:.1f} GFLOP/s, bfloat16 '
        f'{peaks[jnp.bfloat16] / 1e9:.1f} GFLOP/s\n')
  print('| layers | px | tokens | ms/step | img/s | model GFLOPs/img (3x fwd) '
        '| step GFLOPs/img (XLA) | model GFLOP/s | MFU | XLA util. |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    img_s = _BATCH.value / r['seconds']
    achieved = r['model_flops'] * img_s
    print(f"| {r['layers']} | {r['px']} | {r['tokens']} | {1e3 * r['seconds']:.1f} | "
          f"{img_s:.1f} | {r['model_flops'] / 1e9:.3f} | {r['step_flops'] / 1e9:.3f} | "
          f'{achieved / 1e9:.1f} | {100 * achieved / peak:.1f} % | '
          f"{100 * r['step_flops'] * img_s / peak:.1f} % |")


if __name__ == '__main__':
  app.run(main)
