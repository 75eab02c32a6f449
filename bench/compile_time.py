r"""Compile time of the real train step, unrolled encoder vs scanned (`model.scan`).

    python bench/compile_time.py                      # B_16, 32 px, batch 2
    python bench/compile_time.py --config=configs/augreg.py:Ti_16 --image_size=224

A ViT's blocks are identical; the scanned encoder hands XLA one block body
inside a loop instead of `num_layers` copies, so compile time stops growing
with depth. Each variant is timed in a fresh process with the persistent
compile cache off (`trace+lower` and `compile` separately), then two steps
are run from each and the second losses compared: the two programs must agree.
Small images and batch keep it short: compile time depends on the graph,
not on the image size (the table prints both). It runs with the XLA CPU
defaults our commands set (vit_compress/xla_cpu.py).
"""
import json
import os
import subprocess
import sys
import time

from absl import flags
import jax
from ml_collections import config_flags

import machine
import train_step
from vit_compress import cli

_AUGREG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs',
                       'augreg.py')
config_flags.DEFINE_config_file('config', f'{_AUGREG}:B_16', 'Experiment config.')
_SIZE = flags.DEFINE_integer('image_size', 32, 'Input resolution.')
_BATCH = flags.DEFINE_integer('batch_size', 2, 'Global batch per step.')
_RUNS = flags.DEFINE_integer('runs', 1, 'Fresh processes per variant.')
_ONE = flags.DEFINE_enum('one', None, ['unrolled', 'scan'],
                         'Internal: time one variant and print JSON.')


def _time_one(scan: bool) -> dict:
  jax.config.update('jax_enable_compilation_cache', False)
  config = flags.FLAGS.config
  config.model.scan = scan
  step, state, batch, _, _ = train_step.build(config, _BATCH.value,
                                                  _SIZE.value)
  start = time.perf_counter()
  lowered = step.lower(state, batch, {})
  traced = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  state, _ = compiled(state, batch, {})
  _, metrics = compiled(state, batch, {})  # the first loss is ln(classes)
  return {'lower_s': traced - start, 'compile_s': done - traced,
          'loss': float(metrics['loss'])}


def main(argv):
  del argv
  if _ONE.value:
    print(json.dumps(_time_one(_ONE.value == 'scan')))
    return
  print(machine.describe())
  print(f'start: {machine.load()}')
  rows = []
  for run in range(_RUNS.value):
    for variant in ('unrolled', 'scan'):
      out = subprocess.run([sys.executable, *sys.argv, f'--one={variant}'],
                           check=True, capture_output=True, text=True).stdout
      rows.append((run, variant, json.loads(out.strip().splitlines()[-1])))
  print(f'end: {machine.load()}\n')
  c = flags.FLAGS.config.model
  print(f'{c.name} train step ({flags.FLAGS.config.optim.name}), '
        f'{c.transformer.num_layers} layers, {_SIZE.value} px, batch {_BATCH.value}, '
        'persistent compile cache off\n')
  print('| run | encoder | trace+lower s | compile s | loss of step 2 |')
  print('|---|---|---|---|---|')
  for run, variant, r in rows:
    print(f"| {run + 1} | {variant} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | "
          f"{r['loss']:.6f} |")


if __name__ == '__main__':
  cli.run_command(main)  # with the XLA CPU defaults the commands set
