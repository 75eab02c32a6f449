r"""Where one train step's time goes on the CPU: per-thunk times from a jax.profiler trace.

    python bench/step_profile.py                        # Ti_16, 224 px, batch 8
    python bench/step_profile.py --batch_size=32 --work=forward
    python bench/step_profile.py --batch_size=32 --against_torch=/work/torchenv/bin/python

Builds the real train step (`bench/train_step.py`), runs `--steps` of it under
`jax.profiler.trace` with `--xla_cpu_enable_xprof_traceme` (XLA's CPU runtime
then records one event per thunk: each fusion, matmul, copy, loop), sums the
events by thunk name and groups the thunks by what they compute, read off the
compiled HLO: the opcodes inside each fusion. Prints the groups' share of the
traced time and the top thunks with their opcodes. It runs with the XLA CPU
defaults our commands set (vit_compress/xla_cpu.py; `--jaxlib_defaults`
for jaxlib's own). `--against_torch` then profiles timm's same step
(`bench/torch_profile.py`, under that python, after ours: they never
overlap) and prints both per group, so the table says which kind of op is
behind and by how much.
"""
import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import jax  # pylint: disable=g-import-not-at-top

import machine  # pylint: disable=g-import-not-at-top
import torch_profile  # pylint: disable=g-import-not-at-top  (imports torch only when profiling)
import train_step  # pylint: disable=g-import-not-at-top
from configs import augreg  # pylint: disable=g-import-not-at-top
from vit_compress import train  # pylint: disable=g-import-not-at-top
from vit_compress import xla_cpu  # pylint: disable=g-import-not-at-top

UNTRACED = ('wall time outside any thunk event (asynchronous Eigen dots, '
            'waits between thunks)')
_OP = re.compile(r'=\s*[^=]*?\s([a-z][a-z0-9\-_]*)\(')


def hlo_ops(hlo_text: str):
  """{instruction name: opcodes it runs}; a fusion's include its (nested) bodies'."""
  bodies, subcalls, current, calls = {}, {}, None, {}
  for line in hlo_text.splitlines():
    head = re.match(r'^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$', line)
    if head and '=' not in line.split('{')[0]:
      current = head[1]
      bodies[current], subcalls[current] = set(), set()
      continue
    inst = re.match(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=', line)
    if inst and current is not None:
      m = _OP.search(line)
      op = m[1] if m else '?'
      called = re.findall(r'(?:calls|body|to_apply)=%?([\w.\-]+)', line)
      bodies[current].add(op)
      subcalls[current].update(called)
      calls[inst[1]] = (op, called)

  def inner(computation, seen):
    if computation in seen:
      return set()
    seen.add(computation)
    out = set(bodies.get(computation, ()))
    for c in subcalls.get(computation, ()):
      out |= inner(c, seen)
    return out
  return {name: {op}.union(*(inner(c, set()) for c in called))
          for name, (op, called) in calls.items()}


# Opcodes that move no data or only name it: a fusion of these and a copy
# or transpose is a layout change.
_PLUMBING = {'parameter', 'fusion', 'bitcast', 'constant', 'broadcast', 'tuple',
             'get-tuple-element', 'reshape', 'slice'}


def category(name: str, ops) -> str:
  if '::' in name:  # the runtime's own spans enclose the thunks': not summed
    return 'runtime'
  if 'dot' in ops and 'exponential' in ops:
    return 'attention matmul fused with softmax'
  if 'dot' in ops or 'convolution' in ops:
    return 'matmul / conv (dot, convolution)'
  if 'exponential' in ops and 'reduce' in ops:
    return 'softmax (exp + reduce)'
  if 'rsqrt' in ops or 'sqrt' in ops:
    return 'LayerNorm / norms (rsqrt)'
  if 'tanh' in ops or 'erf' in ops:
    return 'GELU (tanh / erf)'
  if 'reduce' in ops or 'reduce-window' in ops:
    return 'other reductions'
  if ops & {'copy', 'transpose'} and not ops - _PLUMBING - {'copy', 'transpose'}:
    return 'copy / transpose (layouts)'
  if 'while' in ops:
    return 'loop control'
  return 'other elementwise'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='Ti_16')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--work', choices=['train', 'forward'], default='train')
  parser.add_argument('--top', type=int, default=12)
  parser.add_argument('--scan', action='store_true')
  parser.add_argument('--jaxlib_defaults', action='store_true',
                      help="jaxlib's XLA flags instead of our commands' CPU defaults.")
  parser.add_argument('--against_torch', default=None,
                      help='A python with torch and timm: profile timm\'s step too.')
  parser.add_argument('--threads', type=int, default=os.cpu_count(),
                      help='torch threads (XLA uses every core it may).')
  args = parser.parse_args()
  if not args.jaxlib_defaults:
    xla_cpu.apply_defaults()   # before the backend starts: XLA reads its flags once
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_cpu_enable_xprof_traceme=true')
  print(f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
  print(machine.describe())
  print(f'start: {machine.load()}')
  config = augreg.get_config(args.model)
  config.model.scan = args.scan
  step, state, batch, module, m = train_step.build(config, args.batch_size,
                                                   args.image_size)
  if args.work == 'train':
    compiled = step.lower(state, batch, {}).compile()
    def run():
      nonlocal state
      state, metrics = compiled(state, batch, {})
      jax.block_until_ready((state, metrics))
  else:
    fwd = jax.jit(lambda p, x: train.model_outputs(module, m, p, x, train=False)['logits'])
    compiled = fwd.lower(state['params'], batch).compile()
    run = lambda: jax.block_until_ready(compiled(state['params'], batch))
  ops = hlo_ops(compiled.as_text())
  run()
  start = time.perf_counter()
  for _ in range(args.steps):
    run()
  wall = (time.perf_counter() - start) / args.steps
  trace_dir = tempfile.mkdtemp()
  with jax.profiler.trace(trace_dir):
    for _ in range(args.steps):
      run()
  path = sorted(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True))[-1]
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):  # XLA's CPU worker threads
        continue
      for event in line.events:
        totals[event.name] += event.duration_ns / args.steps
  print(f'end: {machine.load()}\n')
  runtime = {n for n in totals if category(n, set()) == 'runtime'}
  total = sum(ns for n, ns in totals.items() if n not in runtime)
  print(f'{args.model} {args.work}, {args.image_size} px, batch {args.batch_size}, '
        f'scan={args.scan}: {total / 1e6:.1f} ms of thunk time per step '
        f'(summed over threads; {wall * 1e3:.1f} ms wall per step untraced), {len(totals) - len(runtime)} thunks\n')
  groups = collections.Counter()
  for name, ns in totals.items():
    if name in runtime:
      continue
    groups[category(name, ops.get(name, set()))] += ns
  # XLA's Eigen dots may finish asynchronously on the pool after their thunk
  # returns, and the executor waits between thunks: that time has no event.
  groups[UNTRACED] = max(0.0, wall * 1e9 - total)
  print('| what | ms/step | share of wall |\n|---|---|---|')
  for g, ns in groups.most_common():
    print(f'| {g} | {ns / 1e6:.1f} | {100 * ns / (wall * 1e9):.1f} % |')
  print(f'\n| top thunk | ms/step | share | opcodes |\n|---|---|---|---|')
  top = [(n, ns) for n, ns in totals.most_common() if n not in runtime]
  for name, ns in top[:args.top]:
    inside = ', '.join(sorted(ops.get(name, {'?'}) - {'parameter'}))[:80]
    print(f'| {name} | {ns / 1e6:.1f} | {100 * ns / total:.1f} % | {inside} |')
  if args.against_torch:
    _print_against_torch(args, {g: ns / 1e6 for g, ns in groups.items()}, wall * 1e3)


def _print_against_torch(args, ours_ms, our_wall_ms):
  """timm's profile of the same work, group by group beside ours."""
  out = subprocess.run(
      [args.against_torch, os.path.join(_HERE, 'torch_profile.py'), '--json',
       f'--batch_size={args.batch_size}', f'--threads={args.threads}',
       f'--steps={args.steps}', f'--work={args.work}'],
      check=True, capture_output=True, text=True).stdout
  theirs = json.loads(out.strip().splitlines()[-1])
  print(f"\nagainst {theirs['version']} (aten self time; wall untraced "
        f"{theirs['wall_ms']:.1f} ms vs ours {our_wall_ms:.1f} ms)\n")
  print('| what | JAX ms/step | PyTorch ms/step | JAX - PyTorch ms | JAX / PyTorch |')
  print('|---|---|---|---|---|')
  names = sorted(set(ours_ms) | set(theirs['groups']),
                 key=lambda g: -(ours_ms.get(g, 0) - theirs['groups'].get(g, 0)))
  for g in names:
    j, t = ours_ms.get(g, 0.0), theirs['groups'].get(g, 0.0)
    ratio = f'{j / t:.2f}x' if t else 'n/a'
    print(f'| {g} | {j:.1f} | {t:.1f} | {j - t:+.1f} | {ratio} |')
  j, t = sum(ours_ms.values()), sum(theirs['groups'].values())
  print(f'| **all** | {j:.1f} | {t:.1f} | {j - t:+.1f} | {j / t:.2f}x |')
  torch_profile.print_top_ops(theirs)


if __name__ == '__main__':
  main()
