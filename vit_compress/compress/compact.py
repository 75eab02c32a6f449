"""The compact artifact: a whole model in one .npz, close to its ideal bytes.

    compact.save(path, params, model_config)     # float or quantized params
    module, params, model_config = compact.load(path)

A saved model directory (orbax) spends a file and metadata per array; on a
small int8 model that doubles the bytes on disk. Here every array of one
dtype is concatenated into one flat blob (int8 integers, packed int4,
float32 weights and scales, ...), and the model config plus an index (path,
dtype, shape, offset per array) ride along as one deflated JSON string, so
the file is the ideal bytes - 1 byte per int8 weight, 4 per float32 value
(kept weights and scales) - plus a few hundred bytes. No pickle: the JSON is
stored as uint8 and read with `allow_pickle=False`.

Quantized params (from `quantize.quantize`) are stored as `quantize.to_storage`
lays them out and reload as the PTQ model's parameters.
"""
import io
import json
import os
import zlib
from typing import Any, Dict, Tuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from vit_compress import checkpoint_files
from vit_compress import models
from vit_compress import param_paths
from vit_compress.compress import quantize

PyTree = Any
_META = '__meta__'   # the deflated JSON: {'config': ..., 'index': [...]}


def _storage(params, model_config) -> PyTree:
  if model_config.get('quant') is not None:
    return quantize.to_storage(params)
  return jax.tree.map(np.asarray, params)


def ideal_bytes(params, model_config) -> int:
  """Sum of the stored arrays' bytes: integers, scales and floats, nothing else."""
  return sum(int(np.asarray(a).nbytes)
             for a in jax.tree.leaves(_storage(params, model_config)))


def save(path: str, params: PyTree, model_config: ml_collections.ConfigDict
         ) -> Dict[str, int]:
  """Writes the one-file artifact; returns its 'bytes' and 'ideal_bytes'."""
  flat = param_paths.flatten_with_paths(_storage(params, model_config))
  blobs: Dict[str, list] = {}
  offsets: Dict[str, int] = {}
  index = []
  for key, value in flat:
    value = np.ascontiguousarray(value)
    dtype = value.dtype.str
    index.append({'path': key, 'dtype': dtype, 'shape': list(value.shape),
                  'offset': offsets.get(dtype, 0)})
    blobs.setdefault(dtype, []).append(value.reshape(-1))
    offsets[dtype] = offsets.get(dtype, 0) + value.size
  arrays = {f'blob{i}': np.concatenate(parts) for i, parts in
            enumerate(blobs.values())}
  blob_of = {dtype: f'blob{i}' for i, dtype in enumerate(blobs)}
  for entry in index:
    entry['blob'] = blob_of[entry['dtype']]
  meta = json.dumps({'config': checkpoint_files.config_to_json(model_config),
                     'index': index}, separators=(',', ':'))
  arrays[_META] = np.frombuffer(zlib.compress(meta.encode(), 9), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  tf.io.gfile.makedirs(os.path.dirname(os.fspath(path)) or '.')
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(buffer.getvalue())
  return {'bytes': len(buffer.getvalue()),
          'ideal_bytes': ideal_bytes(params, model_config)}


def _open(path: str):
  with tf.io.gfile.GFile(path, 'rb') as f:
    return np.load(io.BytesIO(f.read()), allow_pickle=False)


def _meta(data, path: str) -> Dict[str, Any]:
  if _META not in data.files:
    raise ValueError(f'{path} is not a compact artifact (no {_META} entry); '
                     'write one with compress.compact.save.')
  return json.loads(zlib.decompress(data[_META].tobytes()).decode())


def is_compact(path: str) -> bool:
  """Whether the .npz at `path` carries a compact artifact's index."""
  try:  # reads the zip directory only, not the arrays
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = np.load(f, allow_pickle=False)
      return isinstance(data, np.lib.npyio.NpzFile) and _META in data.files
  except (ValueError, OSError, EOFError):  # not an .npz at all
    return False


def read_config(path: str) -> ml_collections.ConfigDict:
  """The model config a compact artifact carries, without its arrays."""
  with _open(path) as data:
    return checkpoint_files.config_from_json(_meta(data, path)['config'])


def load(path: str) -> Tuple[Any, PyTree, ml_collections.ConfigDict]:
  """(module, params, model config) of a compact artifact (PTQ module if quantized)."""
  with _open(path) as data:
    meta = _meta(data, path)
    arrays = {k: data[k] for k in data.files if k != _META}
  model_config = checkpoint_files.config_from_json(meta['config'])
  flat = {}
  for e in meta['index']:
    size = int(np.prod(e['shape'], dtype=np.int64))
    blob = arrays[e['blob']]
    flat[e['path']] = blob[e['offset']:e['offset'] + size].astype(
        np.dtype(e['dtype'])).reshape(e['shape'])
  stored = param_paths.tree_from_flat(flat)
  if model_config.get('quant') is not None:
    return (quantize.quantized_model(model_config),
            quantize.params_from_storage(stored, model_config), model_config)
  return models.build(model_config), stored, model_config
