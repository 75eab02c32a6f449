"""The machine a benchmark runs on, printed above its table.

    import machine                 # from a script in bench/
    print(machine.describe())      # CPU model, cores, int8 flags, jax, backend, device
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


def cpu_flags() -> str:
  """The int8-relevant x86 flags present (AVX2, AVX-512, VNNI, AMX), as text."""
  from vit_compress import edge  # pylint: disable=g-import-not-at-top
  return ' '.join(edge.cpu_info()['flags']) or 'none of avx2/avx512f/vnni/amx'


def describe() -> str:
  devices = jax.devices()
  return (f'{cpu_model()}, {os.cpu_count()} cores, flags: {cpu_flags()}; jax '
          f'{jax.__version__}, backend {jax.default_backend()}, {len(devices)}x '
          f'{devices[0].device_kind}')


def load() -> str:
  try:
    return 'load average ' + ' '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return 'load average n/a'
