"""The machine a benchmark runs on, printed above its table.

    import machine                 # from a script in bench/
    print(machine.describe())      # CPU model, cores, jax version, backend, device
    print(machine.load())          # load average now (1, 5, 15 minutes)

The load average says how busy the host was: on a shared machine a
benchmark's absolute numbers mean little without it.
"""
import os
import platform

import jax


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> str:
  devices = jax.devices()
  return (f'{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, '
          f'backend {jax.default_backend()}, {len(devices)}x {devices[0].device_kind}')


def load() -> str:
  try:
    return 'load average ' + ' '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return 'load average n/a'
