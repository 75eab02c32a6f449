"""The XLA options our commands set for the CPU backend, and why.

XLA reads `XLA_FLAGS` once, when the first backend starts, so a command adds
these before it computes anything (`cli.run_command`). A flag the user's own
`XLA_FLAGS` names is left as the user set it; that is also how to turn one
of ours off (the value that restores jaxlib's default is listed with it).
The options only touch XLA's CPU compiler: on GPU and TPU hosts they change
nothing but the host-side CPU client.

Library users (`import vit_compress`) get jaxlib's defaults unless they call
`apply_defaults()` before their first computation, as the notebooks and
`tests/conftest.py` do.
"""
import importlib.metadata
import os
import shlex
from typing import Dict, List, MutableMapping, NamedTuple, Optional, Tuple


class Default(NamedTuple):
  value: str                     # what we set
  restore: str                   # the value that gives jaxlib's default back
  jaxlib: Tuple[str, str]        # [from, below): the versions it was measured on
  why: str


# XLA aborts on a flag its jaxlib does not know, so each default is added only
# for the jaxlib versions where it exists and was measured.
# Measured in bench/README.md, "Where it stands" (`python bench/cpu_options.py`,
# `python bench/vs_pytorch.py`); jaxlib's other YNNPACK fusion kinds were slower.
DEFAULTS: Dict[str, Default] = {
    'xla_cpu_experimental_ynn_fusion_type': Default(
        value='', restore='individual_dot', jaxlib=('0.10.2', '0.11'),
        why='XLA runs the dots itself (Eigen) instead of calling YNNPACK for '
        'each one. On an AMD EPYC (Zen 4, 2 cores, quiet), ViT-Ti/16 at '
        '224 px: train step +10 to +14 % and forward +27 to +29 % at batch 32, '
        '+1 to +20 % over the four rows of bench/vs_pytorch.py; logits move '
        'by 1e-6 of their range (tests/test_xla_cpu.py: logits and an SGD '
        'step equal to float32 tolerance).'),
}


def _version(text: str) -> Tuple[int, ...]:
  return tuple(int(p) for p in text.split('.')[:3] if p.isdigit())


def _installed_jaxlib() -> Optional[str]:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def _named(xla_flags: str) -> set:
  """The flag names an XLA_FLAGS string sets (`--name=value` or `--name`)."""
  names = set()
  for word in shlex.split(xla_flags):
    if word.startswith('--'):
      names.add(word[2:].split('=', 1)[0])
  return names


def flag(name: str) -> str:
  """`--name=value`: one of `DEFAULTS` as XLA_FLAGS spells it."""
  return f'--{name}={DEFAULTS[name].value}'


def apply_defaults(environ: MutableMapping[str, str] = os.environ,
                   jaxlib_version: Optional[str] = None) -> List[str]:
  """Adds each of `DEFAULTS` the user's XLA_FLAGS does not name and this
  jaxlib (default: the installed one) is in range for; returns the flags
  added. Call before the first computation: XLA reads XLA_FLAGS once."""
  version = _version(jaxlib_version or _installed_jaxlib() or '0')
  current = environ.get('XLA_FLAGS', '')
  named = _named(current)
  added = [flag(name) for name, d in DEFAULTS.items()
           if name not in named
           and _version(d.jaxlib[0]) <= version < _version(d.jaxlib[1])]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip(), *added]).strip()
  return added
