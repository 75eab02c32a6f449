"""Unrolled `encoderblock_i` parameters <-> one scanned `encoderblock` (layer axis first).

The one place where the two layouts meet. Checkpoints, npz files, pruning,
sharding and quantization rules all see the unrolled layout
(`Transformer/encoderblock_0/...`); a scanned encoder (`scan=True`) stacks the
blocks into `encoderblock/...` when it reads its variables and unstacks them
when it writes (at init). Invariant: `unstack(stack(v)) == v` for any variable
dict whose blocks are identical in structure and shape.
"""
import re
from typing import Any, Dict

import jax
import jax.numpy as jnp

SCANNED = 'encoderblock'
_BLOCK = re.compile(r'encoderblock_(\d+)')


def _blocks(params) -> list:
  """The unrolled block names, in layer order."""
  found = [(int(m[1]), k) for k in params if (m := _BLOCK.fullmatch(k))]
  return [k for _, k in sorted(found)]


def stack(variables: Dict[str, Any]) -> Dict[str, Any]:
  """{'params': {encoderblock_0: t0, ...}} -> {'params': {encoderblock: stacked}}."""
  params = variables.get('params')
  if not params or not _blocks(params):
    return variables
  params = dict(params)
  layers = [params.pop(k) for k in _blocks(params)]
  params[SCANNED] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return {**variables, 'params': params}


def unstack(variables: Dict[str, Any]) -> Dict[str, Any]:
  """The inverse of `stack`: one `encoderblock_i` per slice of the layer axis."""
  params = variables.get('params')
  if not params or SCANNED not in params:
    return variables
  params = dict(params)
  stacked = params.pop(SCANNED)
  for i in range(jax.tree.leaves(stacked)[0].shape[0]):
    params[f'encoderblock_{i}'] = jax.tree.map(lambda a, i=i: a[i], stacked)
  return {**variables, 'params': params}
