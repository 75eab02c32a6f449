r"""What each model-code choice and XLA CPU option does to our train step and forward.

    python bench/cpu_options.py                         # Ti_16, 224 px, batch 8
    python bench/cpu_options.py --variants=baseline,fast_math --batch_size=32

One worker process per variant (XLA flags are read once per process), each
compiling the real train step (`bench/train_step.py`, configs/augreg.py's SGD
recipe) and the jitted forward; then rounds alternate over the workers so
all variants see the same machine load, each round timing calls for at
least `--min_seconds` (median kept); the table has the median over rounds
and the range. Accuracy: the forward's logits on one fixed batch (same
parameters, a random non-zero head) against the baseline's, as the largest
absolute difference over the largest logit. The script itself adds no
flags: each variant's go on top of the caller's XLA_FLAGS, so 'baseline' is
jaxlib's default and 'no_ynnpack' is what our commands run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_compress import xla_cpu  # pylint: disable=g-import-not-at-top,wrong-import-position

# The flags our commands add on CPU (one home: vit_compress/xla_cpu.py).
_OURS = ' '.join(xla_cpu.flag(name) for name in xla_cpu.DEFAULTS)

# name: (XLA flags, model overrides, code change, what it is)
VARIANTS = {
    'baseline': ('', {}, None, "jaxlib's XLA flags (YNNPACK dots), tanh GELU "
                 '(as vit_jax), jax.nn.dot_product_attention'),
    'exact_gelu': ('', {}, 'exact_gelu', 'erf GELU (timm\'s), not vit_jax\'s'),
    'einsum_attention': ('', {}, 'einsum_attention',
                         'explicit einsum + softmax attention'),
    'scan': ('', {'scan': True}, None, 'model.scan: lax.scan over the blocks'),
    'remat': ('', {'remat': True}, None, 'model.remat: recompute each block'),
    'fast_math': ('--xla_cpu_enable_fast_math=true', {}, None,
                  'XLA fast math (approximate)'),
    'onednn': ('--xla_cpu_use_onednn=true', {}, None, 'oneDNN rewrites'),
    'xnnpack': ('--xla_cpu_use_xnnpack=true', {}, None, 'XNNPACK rewrites'),
    'no_ynnpack': (_OURS, {}, None,
                   'YNNPACK dot fusions off (XLA\'s own dots): our commands\' '
                   'CPU default, vit_compress/xla_cpu.py'),
    'vector_512': ('--xla_cpu_prefer_vector_width=512', {}, None,
                   '512-bit vectors in XLA\'s codegen'),
    'no_ynnpack_vector_512': (f'{_OURS} --xla_cpu_prefer_vector_width=512', {}, None,
                              'YNNPACK dot fusions off and 512-bit vectors'),
    'no_ynnpack_xnnpack': (f'{_OURS} --xla_cpu_use_xnnpack=true', {}, None,
                           'YNNPACK dot fusions off, XNNPACK rewrites on'),
    'ynn_dot': ('--xla_cpu_experimental_ynn_fusion_type=dot', {}, None,
                'YNNPACK dots fused with their elementwise neighbours'),
    'ynn_dot_eltwise': ('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise', {}, None,
                        'YNNPACK dots and elementwise fusions'),
    'ynn_dot_eltwise_reduce': ('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',
                               {}, None, 'YNNPACK dots, elementwise and reductions'),
    'no_fusion_emitters': (f'{_OURS} --xla_cpu_use_fusion_emitters=false', {}, None,
                           'our default + XLA\'s older loop emitters'),
    'concurrency_scheduler': ('--xla_cpu_enable_concurrency_optimized_scheduler=true',
                              {}, None, 'XLA\'s concurrency-optimised scheduler'),
    'no_eigen_threads': ('--xla_cpu_multi_thread_eigen=false', {}, None,
                         'single-threaded Eigen'),
}


def _patch_model_code(change):
  """Code changes without a config option: replaced for this process only."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vit_compress.models import vit  # pylint: disable=g-import-not-at-top
  if change == 'exact_gelu':
    vit.nn.gelu = lambda x: jax.nn.gelu(x, approximate=False)
  elif change == 'einsum_attention':
    def attention(q, k, v, bias=None, mask=None):
      del mask
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
      if bias is not None:
        logits = logits + bias
      return jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(logits, axis=-1), v)
    vit.jax.nn.dot_product_attention = attention


def _worker(name, args):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import train_step  # pylint: disable=g-import-not-at-top
  from configs import augreg  # pylint: disable=g-import-not-at-top
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  _, overrides, change, _ = VARIANTS[name]
  _patch_model_code(change)
  config = augreg.get_config(args.model)
  config.schedule.warmup_steps = 0
  for k, v in overrides.items():
    config.model[k] = v
  step, state, batch, module, m = train_step.build(config, args.batch_size,
                                                   args.image_size)
  start = time.perf_counter()
  compiled = step.lower(state, batch, {}).compile()
  compile_s = time.perf_counter() - start
  fwd = jax.jit(lambda p, x: train.model_outputs(module, m, p, x, train=False)['logits'])
  params = dict(state['params'])
  head = params['head']['kernel']
  params['head'] = {'kernel': 0.05 * jax.random.normal(jax.random.key(5), head.shape),
                    'bias': params['head']['bias']}
  logits = np.asarray(fwd(params, batch))
  box = {'state': state}

  def train_once():
    box['state'], metrics = compiled(box['state'], batch, {})
    jax.block_until_ready((box['state'], metrics))
  forward = lambda: jax.block_until_ready(fwd(box['state']['params'], batch))
  train_once()
  forward()  # compiles again: the state's arrays are placed, the probe's not
  print(json.dumps({'ready': True, 'compile_s': compile_s,
                    'logits': logits.tolist()}), flush=True)
  works = {'train': train_once, 'forward': forward}
  for line in sys.stdin:
    req = json.loads(line)
    print(json.dumps({'seconds': timing.median_call_seconds(
        works[req['work']], args.min_seconds, args.min_iters)}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--model', default='Ti_16')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--min_seconds', type=float, default=1.0)
  parser.add_argument('--min_iters', type=int, default=2)
  parser.add_argument('--worker', help='Internal: run one variant.')
  args = parser.parse_args()
  if args.worker:
    _worker(args.worker, args)
    return
  import machine  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  print(machine.describe())
  print(f'start: {machine.load()}')
  names = args.variants.split(',')
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    sys.exit(f'error: unknown variants {unknown}; known: {sorted(VARIANTS)}')
  workers, ready = {}, {}
  for name in names:  # one at a time: compiles do not compete
    flags = VARIANTS[name][0]
    env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') + ' ' + flags).strip())
    workers[name] = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f'--worker={name}',
         *[a for a in sys.argv[1:] if not a.startswith('--variants')]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    ready[name] = json.loads(workers[name].stdout.readline())
  times = {(n, w): [] for n in names for w in ('train', 'forward')}
  for _ in range(args.rounds):
    for name in names:
      for work in ('train', 'forward'):
        workers[name].stdin.write(json.dumps({'work': work}) + '\n')
        workers[name].stdin.flush()
        times[(name, work)].append(json.loads(workers[name].stdout.readline())['seconds'])
  for w in workers.values():
    w.stdin.close()
    w.wait()
  print(f'end: {machine.load()}\n')
  print(f'{args.model}, {args.image_size} px, batch {args.batch_size}, float32; median '
        f'(min-max) of {args.rounds} interleaved rounds\n')
  base = np.asarray(ready[names[0]]['logits'])
  print(f'| variant | what | train img/s | vs {names[0]} | forward img/s | vs {names[0]} '
        '| compile s (train step) | max abs logit diff / max logit |')
  print('|---|---|---|---|---|---|---|---|')
  b = args.batch_size
  med = {k: statistics.median(v) for k, v in times.items()}
  for name in names:
    diff = np.abs(np.asarray(ready[name]['logits']) - base).max() / np.abs(base).max()
    cells = []
    for work in ('train', 'forward'):
      t = times[(name, work)]
      cells += [f'{b / med[(name, work)]:.1f} ({b / max(t):.1f}-{b / min(t):.1f})',
                f'{med[(names[0], work)] / med[(name, work)]:.2f}x']
    print(f'| {name} | {VARIANTS[name][3]} | {" | ".join(cells)} | '
          f"{ready[name]['compile_s']:.1f} | {diff:.1e} |")


if __name__ == '__main__':
  main()
