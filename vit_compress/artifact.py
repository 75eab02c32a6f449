"""Saved artifacts: one `load(path)`, one `save`, one layout.

Every stage's output is one of two things on disk, each carrying the model
config that rebuilds it (so loading needs no training config and no pickle):

  a saved model directory          (checkpoint_files.save_model)
    model_config.json              checkpoint_files.CONFIG_FILE: the model config,
                                   with a `quant` section when quantized
    params/                        checkpoint_files.PARAMS_DIR: orbax arrays (a
                                   quantized model's integers and scales)
    extra.json                     checkpoint_files.EXTRA_FILE: optional metadata
  a compact one-file artifact      FILE.npz (compress.compact)

An exported file (a vit_jax .npz, a .tflite, an .onnx) keeps its model config
beside it, in FILE.model_config.json (`sidecar_path`; predict reads its
`inference` record: the eval pp and the class names).

A training workdir (or a recipe stage's directory) keeps its saved model in
`checkpoint_files.MODEL_SUBDIR` ('model'); its root holds a model_config.json of its
own (the workdir's identity, `workdir.check_identity`) but no params/, so a
root is resolved to its model here rather than read as one.

    art = artifact.load(path)          # float, masked, shrunk, low-rank,
    module, params, model_config = art  # quantized; a dir, a workdir or .npz
    artifact.save(path, params, model_config)

Whatever kind a path holds, `load` returns the module that runs it, its
parameters and its model config; a path that holds none gives one
`ArtifactNotFoundError` (a ValueError and a FileNotFoundError) naming what
the path is and what to pass instead.
"""
import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Optional, Tuple

from absl import logging
import ml_collections
import tensorflow as tf

from vit_compress import checkpoint_files

PyTree = Any
MODEL_SUBDIR = checkpoint_files.MODEL_SUBDIR
COMPACT_SUFFIX = '.npz'
SIDECAR_SUFFIX = '.model_config.json'   # FILE.npz / .tflite / .onnx -> its config

_WHAT = ('a saved model directory (WORKDIR/model, holding model_config.json and '
         'params/), a training workdir with a finished model/, or a compact '
         '.npz artifact (compress.compact)')


class ArtifactNotFoundError(FileNotFoundError, ValueError):
  """A path that holds no loadable artifact; str() says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Artifact:
  """A loaded artifact. Unpacks as (module, params, model_config)."""
  module: Any                             # flax module (the PTQ one if quantized)
  params: PyTree
  model_config: ml_collections.ConfigDict
  path: str                               # the resolved directory or file
  extra: Optional[Mapping[str, Any]] = None  # a saved model's extra.json

  @property
  def quantized(self) -> bool:
    return is_quantized(self.model_config)

  def __iter__(self) -> Iterator[Any]:
    return iter((self.module, self.params, self.model_config))

  def dequantized(self) -> 'Artifact':
    """The float model a quantized one computes (int8 weights times scales;
    static activation scales dropped); a float artifact as it is."""
    if not self.quantized:
      return self
    from vit_compress import models  # pylint: disable=g-import-not-at-top
    from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
    params, config = quantize.dequantize(self.params, self.model_config)
    return dataclasses.replace(self, module=models.build(config), params=params,
                               model_config=config)


def sidecar_path(path: str) -> str:
  """Where the model config of an exported file (.npz, .tflite, .onnx) lives."""
  return os.path.splitext(os.fspath(path))[0] + SIDECAR_SUFFIX


def write_sidecar(path: str, model_config: ml_collections.ConfigDict) -> str:
  """Writes `model_config` (with its `inference` record) beside `path`."""
  target = sidecar_path(path)
  with tf.io.gfile.GFile(target, 'w') as f:
    f.write(json.dumps(checkpoint_files.config_to_json(model_config), indent=2,
                       sort_keys=True))
  return target


def is_quantized(model_config) -> bool:
  return model_config.get('quant') is not None


def is_compact(path: str) -> bool:
  """Whether `path` is a compact one-file artifact (an .npz with its index)."""
  from vit_compress.compress import compact  # pylint: disable=g-import-not-at-top
  return (os.fspath(path).endswith(COMPACT_SUFFIX) and tf.io.gfile.exists(path)
          and not tf.io.gfile.isdir(path) and compact.is_compact(path))


def resolve(path: str, key: str = 'path') -> str:
  """The saved model directory `path` names: itself, or `path/model` for a
  training workdir; `ArtifactNotFoundError` naming `key` for anything else."""
  path = os.fspath(path or '')
  if not path:
    raise ArtifactNotFoundError(f'{key} is empty: give a saved model directory '
                                f'(WORKDIR/{MODEL_SUBDIR}).')
  if not tf.io.gfile.exists(path):
    raise ArtifactNotFoundError(
        f'{key}={path!r} does not exist, so it is not a saved model: give a '
        f'saved model directory (WORKDIR/{MODEL_SUBDIR}) or a training workdir.')
  if not tf.io.gfile.isdir(path):
    raise ArtifactNotFoundError(
        f'{key}={path!r} is a file, not a saved model directory: give the '
        f'directory training wrote (WORKDIR/{MODEL_SUBDIR}).')
  found = checkpoint_files.find_model_dir(path)
  if found and found != path:
    logging.info('%s=%s is a training workdir: using its model, %s.', key, path,
                 found)
  if found:
    return found
  raise ArtifactNotFoundError(
      f'{key}={path!r} is a directory but not a saved model (no '
      f'{checkpoint_files.CONFIG_FILE} beside {checkpoint_files.PARAMS_DIR}/), nor a '
      f'workdir with a finished {MODEL_SUBDIR}/: give WORKDIR/{MODEL_SUBDIR} '
      'of a finished run.')


def _locate(path: str, key: str) -> Tuple[str, bool]:
  """(the artifact's directory or file, whether it is a compact file)."""
  path = os.fspath(path or '')
  if not path:
    raise ArtifactNotFoundError(f'{key} is empty: give {_WHAT}.')
  if not tf.io.gfile.exists(path):
    raise ArtifactNotFoundError(f'{key}={path!r} does not exist: give {_WHAT}.')
  if tf.io.gfile.isdir(path):
    return resolve(path, key), False
  if not is_compact(path):
    raise _wrong_file(path, key)
  return path, True


def _wrong_file(path: str, key: str) -> ArtifactNotFoundError:
  if path.endswith(COMPACT_SUFFIX):
    hint = ('it is an .npz without a compact artifact\'s index (a vit_jax or '
            'big_vision checkpoint?): load it with checkpoint.load_npz(path, '
            'zoo.get(NAME)), or predict --model_name=NAME')
  elif path.endswith(('.tflite', '.onnx')):
    hint = ('TFLite and ONNX files run in their own runtimes '
            '(vit_compress.tflite, onnxruntime), not as JAX models')
  else:
    hint = f'give {_WHAT}'
  return ArtifactNotFoundError(f'{key}={path!r} is a file of another kind: {hint}.')


def load(path: str, *, key: str = 'path', tome_r: int = 0,
         require_float: Optional[str] = None) -> Artifact:
  """The artifact at `path`: float, masked, shrunk, low-rank or quantized saved
  model (a workdir root resolves to its model), or a compact .npz.

  `tome_r` > 0 turns on token merging (a ViT's, no training needed).
  `require_float`: refuse a quantized artifact with this advice, before its
  arrays are read (e.g. 'export the float model it came from.').
  `key` names the path in error messages (a flag, a config key).
  """
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  from vit_compress.compress import compact  # pylint: disable=g-import-not-at-top
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  from vit_compress.models import families  # pylint: disable=g-import-not-at-top
  path, one_file = _locate(path, key)
  extra = None
  if require_float and is_quantized(read_config(path, key)):
    raise ValueError(f'{path} holds a quantized model; {require_float}')
  if one_file:
    _, params, model_config = compact.load(path)
  else:
    model_config, params, extra = checkpoint_files.load_model(path, with_extra=True)
    if is_quantized(model_config):
      params = quantize.params_from_storage(params, model_config)
  if tome_r:  # token merging needs no training: set it and run
    if not families.lookup(model_config).token_merging:
      raise ValueError(f'tome_r needs a ViT; {path} is a '
                       f'{model_config.get("family")!r} model.')
    model_config.tome_r = tome_r
  module = (quantize.quantized_model(model_config) if is_quantized(model_config)
            else models.build(model_config))
  return Artifact(module, params, model_config, path, extra)


def read_config(path: str, key: str = 'path') -> ml_collections.ConfigDict:
  """The model config of the artifact at `path`, without reading its arrays."""
  from vit_compress.compress import compact  # pylint: disable=g-import-not-at-top
  path, one_file = _locate(path, key)
  if one_file:
    return compact.read_config(path)
  return checkpoint_files.read_model_config(os.path.join(path, checkpoint_files.CONFIG_FILE))


def save(path: str, params: PyTree, model_config: ml_collections.ConfigDict, *,
         extra: Optional[Mapping[str, Any]] = None, overwrite: bool = False
         ) -> Optional[dict]:
  """Writes an artifact `load` reads back: a compact file when `path` ends in
  .npz, else a saved model directory (a quantized model's integers packed by
  `quantize.save_quantized`, which returns its size report)."""
  from vit_compress.compress import compact  # pylint: disable=g-import-not-at-top
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if path.endswith(COMPACT_SUFFIX):
    if tf.io.gfile.exists(path) and not overwrite:
      raise FileExistsError(f'{path} exists: pass overwrite=True or choose '
                            'another path.')
    return compact.save(path, params, model_config)
  if is_quantized(model_config):
    return quantize.save_quantized(path, params, model_config, overwrite=overwrite,
                                   extra=extra)
  checkpoint_files.save_model(path, params, model_config, extra=extra, overwrite=overwrite)
  return None
