"""Compression transforms by name: pure `(params, model_config) -> (params,
model_config)` functions on a loaded artifact.

Each takes host parameters and the model config that builds them, plus its
own keyword settings, and returns new parameters with the model config that
builds *those*, so the result saves with `artifact.save` and reloads with
`artifact.load` alone. Nothing is read or written here: the recipe stages
(`stages`), the command lines (`compress.shrink_cli`, `compress.lowrank`) and
`export` load, call `apply(name, ...)`, and save.

  shrink      pruned heads, neurons and layers removed; the masks are the
              zeros a masked model carries (`structure.shrink_zeros`)
  lowrank     kernels replaced by truncated-SVD factors (`lowrank.factorize`:
              energy= / ratio= / rank=, params_regex=)
  quantize    post-training quantization (`quantize.quantize`: quant_config=,
              batches= calibration batches for static activation scales)
  dequantize  a quantized model's float equivalent (`quantize.dequantize`)

Token merging (`tome_r`) is a model-config setting, not a transform of
parameters: `artifact.load(path, tome_r=...)` sets it.
"""
from typing import Any, Callable, Tuple

import ml_collections

from vit_compress.registry import Registry

PyTree = Any
Transform = Callable[..., Tuple[PyTree, ml_collections.ConfigDict]]

TRANSFORMS: Registry[Transform] = Registry('compression transform')


def apply(name: str, params: PyTree, model_config: ml_collections.ConfigDict,
          **settings) -> Tuple[PyTree, ml_collections.ConfigDict]:
  """(new params, new model config) of the transform registered as `name`."""
  return TRANSFORMS.get(name)(params, model_config, **settings)


# The modules are imported when a transform runs: qwix and the SVD code load
# only for what is used.
@TRANSFORMS.register('shrink')
def _shrink(params, model_config):
  from vit_compress.compress import structure  # pylint: disable=g-import-not-at-top
  return structure.shrink_zeros(params, model_config)


@TRANSFORMS.register('lowrank')
def _lowrank(params, model_config, **settings):
  from vit_compress.compress import lowrank  # pylint: disable=g-import-not-at-top
  return lowrank.factorize(params, model_config, **settings)


@TRANSFORMS.register('quantize')
def _quantize(params, model_config, quant_config=None, batches=None):
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  return quantize.quantize(params, model_config, quant_config, batches=batches)


@TRANSFORMS.register('dequantize')
def _dequantize(params, model_config):
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  return quantize.dequantize(params, model_config)
