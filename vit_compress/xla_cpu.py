"""The XLA options our commands set for the CPU backend, and why.

XLA reads `XLA_FLAGS` once, when the first backend starts, so a command adds
these before it computes anything (`cli.run_command`). A flag the user's own
`XLA_FLAGS` names is left as the user set it; that is also how to turn one
of ours off (the value that restores jaxlib's default is listed with it).
The options only touch XLA's CPU compiler: on GPU and TPU hosts they change
nothing but the host-side CPU client.

Library users (notebooks, `import vit_compress`) get jaxlib's defaults
unless they call `apply_defaults()` before their first computation.
"""
import os
import shlex
from typing import Dict, List, MutableMapping, Tuple

# flag: (value we set, the value that restores jaxlib's default, why).
# Measured in bench/README.md ("Model-code choices and XLA CPU options",
# `python bench/cpu_options.py`; "Ours vs timm", `python bench/vs_pytorch.py`).
DEFAULTS: Dict[str, Tuple[str, str, str]] = {
    'xla_cpu_experimental_ynn_fusion_type': (
        '', 'individual_dot',
        'XLA runs the dots itself (Eigen) instead of calling YNNPACK for '
        'each one. On an AMD EPYC (Zen 4, 2 cores, quiet), ViT-Ti/16 at '
        '224 px: train step +10 to +14 % and forward +27 to +29 % at batch 32, '
        '+1 to +20 % over the four rows of bench/vs_pytorch.py; logits move '
        'by 1e-6 of their range (tests/test_xla_cpu.py: logits and an SGD '
        'step equal to float32 tolerance).'),
}


def _named(xla_flags: str) -> set:
  """The flag names an XLA_FLAGS string sets (`--name=value` or `--name`)."""
  names = set()
  for word in shlex.split(xla_flags):
    if word.startswith('--'):
      names.add(word[2:].split('=', 1)[0])
  return names


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> List[str]:
  """Adds each of `DEFAULTS` the user's XLA_FLAGS does not name; returns the
  flags added. Call before the first computation: XLA reads XLA_FLAGS once."""
  current = environ.get('XLA_FLAGS', '')
  named = _named(current)
  added = [f'--{name}={value}' for name, (value, _, _) in DEFAULTS.items()
           if name not in named]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip(), *added]).strip()
  return added
