"""What a model costs, measured: parameters, bytes, FLOPs, images per second, memory.

- params: weights the model has (a quantized kernel counts its logical
  entries, not its scales); non-zero params: entries that are not exactly 0
  (what unstructured pruning saves).
- bytes: the artifact on disk (a file, or every file under a directory) when
  given, else the bytes of the arrays as they are held (int8 stays 1 byte).
- FLOPs per image: XLA's cost analysis of the compiled batch-1 forward
  (a multiply-add counts 2).
- img/s: per batch size, the forward compiled once, warmed up, then the
  median of `repeats` timed runs; each run blocks on every call (batch 1 is
  latency) and repeats calls until it lasts `min_run_s`, above timer noise.
- memory: the compiled forward's own need (arguments + outputs + temporaries,
  from XLA's memory analysis) and the device's peak in use when the runtime
  reports it (`device.memory_stats()`; None on CPU).
"""
import math
import os
import re
import statistics
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
import tensorflow as tf

from vit_compress import param_paths
from vit_compress.models import batch_norm

PyTree = Any


def _values(leaf):
  """The array holding a leaf's entries (a quantized leaf's integer values)."""
  if isinstance(leaf, (np.ndarray, jax.Array)):
    return leaf
  same = [a for a in jax.tree.leaves(leaf) if np.shape(a) == tuple(leaf.shape)]
  return same[0] if same else None


def count_params(params: PyTree) -> Tuple[int, int]:
  """(parameters, non-zero parameters); BatchNorm running statistics are
  buffers, not parameters (as `models.count_params`)."""
  stats = re.compile(batch_norm.RUNNING_STATS)
  # Leaves as the model sees them: a quantized weight (qwix) is one leaf.
  is_leaf = lambda x: hasattr(x, 'shape') and not isinstance(x, Mapping)
  total = nonzero = 0
  for key, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_leaf)[0]:
    if stats.search(param_paths.path_str(key)):
      continue
    size = math.prod(leaf.shape)
    values = _values(leaf)
    total += size
    nonzero += size if values is None else int(np.count_nonzero(np.asarray(values)))
  return total, nonzero


def held_bytes(params: PyTree) -> int:
  """Bytes of every stored array (integers, scales, floats) as held in memory."""
  return sum(int(np.asarray(a).nbytes) for a in jax.tree.leaves(params))


def artifact_bytes(path: str) -> int:
  """Size on disk of a file, or of all files under a directory."""
  path = os.fspath(path)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'profile: artifact {path} does not exist.')
  if not tf.io.gfile.isdir(path):
    return int(tf.io.gfile.stat(path).length)
  total = 0
  for root, _, files in tf.io.gfile.walk(path):
    total += sum(tf.io.gfile.stat(os.path.join(root, f)).length for f in files)
  return int(total)


def device_description() -> str:
  devices = jax.devices()
  kind = devices[0].device_kind
  return f'{len(devices)}x {kind}' if len(devices) > 1 else kind


def _forward(model):
  if isinstance(model, nn.Module):
    return lambda params, images: model.apply({'params': params}, images)
  if callable(model):
    return model
  raise TypeError(f'Expected a Flax module or a function (params, images), got '
                  f'{type(model).__name__}.')


def _image_shape(batches, image_shape):
  if image_shape is not None:
    return tuple(int(d) for d in image_shape)
  if batches is None:
    raise ValueError('profile needs image_shape=(H, W, 3) or batches to read it from.')
  batch = next(iter(batches))
  return tuple(int(d) for d in np.shape(batch['image'])[1:])


def _compiled_bytes(compiled) -> Optional[int]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # not every backend implements it
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes
             + m.temp_size_in_bytes - m.alias_size_in_bytes)


def compiled_flops(compiled, batch_size: int = 1) -> Optional[float]:
  """XLA's FLOP count of a compiled computation, per example (None if the
  backend does not report it); a multiply-add counts 2."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  if not cost or cost.get('flops') is None:
    return None
  return float(cost['flops']) / batch_size


def _time_calls(compiled, params, images, repeats: int, warmup: int,
                min_run_s: float) -> float:
  """Median seconds per call."""
  start = time.perf_counter()
  for _ in range(max(warmup, 1)):
    jax.block_until_ready(compiled(params, images))
  per_call = (time.perf_counter() - start) / max(warmup, 1)
  calls = max(1, math.ceil(min_run_s / max(per_call, 1e-9)))
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      jax.block_until_ready(compiled(params, images))
    runs.append((time.perf_counter() - start) / calls)
  return statistics.median(runs)


def profile(model, params: PyTree, batches: Optional[Iterable[Any]] = None, *,
            image_shape: Optional[Sequence[int]] = None,
            artifact: Optional[str] = None,
            batch_sizes: Sequence[int] = (1, 256), repeats: int = 5,
            warmup: int = 2, min_run_s: float = 0.05) -> Dict[str, Any]:
  """Measures a model; see the module docstring for what each number means.

  `model` is a Flax module or `fn(params, images)`; the image shape comes
  from `image_shape` or the first of `batches`. Returns 'params',
  'nonzero_params', 'sparsity', 'bytes', 'bytes_source', 'flops' (per image),
  'img_per_s_b{B}' and 'latency_ms_b{B}' per batch size, 'img_per_s' and
  'batch_size' (the largest batch), 'compiled_bytes' (at that batch),
  'peak_bytes' (None where the runtime does not report it), 'device'.
  """
  if repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
    raise ValueError(f'profile: repeats={repeats} and batch_sizes={batch_sizes} '
                     'must be positive.')
  shape = _image_shape(batches, image_shape)
  forward = jax.jit(_forward(model))
  total, nonzero = count_params(params)
  out = {'params': total, 'nonzero_params': nonzero,
         'sparsity': 1.0 - nonzero / max(total, 1)}
  if artifact is not None:
    out['bytes'], out['bytes_source'] = artifact_bytes(artifact), 'disk'
  else:
    out['bytes'], out['bytes_source'] = held_bytes(params), 'arrays in memory'
  device_params = jax.device_put(params)
  rng = np.random.default_rng(0)
  for b in sorted(set(int(b) for b in batch_sizes)):
    images = jax.device_put(rng.standard_normal((b,) + shape).astype(np.float32))
    compiled = forward.lower(device_params, images).compile()
    if 'flops' not in out:
      out['flops'] = compiled_flops(compiled, b)
    seconds = _time_calls(compiled, device_params, images, repeats, warmup, min_run_s)
    out[f'img_per_s_b{b}'] = b / seconds
    out[f'latency_ms_b{b}'] = 1e3 * seconds
    out['img_per_s'], out['batch_size'] = b / seconds, b
    out['compiled_bytes'] = _compiled_bytes(compiled)
  stats = jax.local_devices()[0].memory_stats()
  out['peak_bytes'] = int(stats['peak_bytes_in_use']) if stats and (
      'peak_bytes_in_use' in stats) else None
  out['device'] = device_description()
  return out
