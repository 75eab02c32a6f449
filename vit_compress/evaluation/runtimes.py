"""Report rows of a model as a device runs it: its TFLite or ONNX file in that runtime.

A report variant's `runtime` names what is measured: 'jax' (the saved model
compiled by XLA, the default), 'tflite' or 'onnx' (its float file), or an int8
edge artifact of `edge.ARTIFACTS` ('tflite_int8', 'tflite_int8_dynamic',
'onnx_int8_dynamic', 'onnx_int8_static'). For an edge runtime the file is
built by `edge.build` (the converters `export_optimized` uses), then

  top-1 / top-5 / loss, and agreement with the reference's logits, come from
  the interpreter's logits on the same eval batches (`classification`'s
  metrics, fed those logits);
  img/s at each report batch size: the same warm-up and median of `repeats`
  runs as `eval.profile`, on random images, in one interpreter per batch
  size (a TFLite file has a fixed batch, so one file per batch size; an
  ONNX file's batch is symbolic, one file);
  bytes: the size of the file at the row's batch size.

Invariant: every number of an edge row is measured on the file it names
('edge_file'), in its own runtime; only 'params' and 'flops' are the source
model's (the same graph; XLA's FLOP count).
"""
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import numpy as np

from vit_compress.evaluation import classification
from vit_compress.evaluation import profiling

JAX = 'jax'
_FLOAT_ALIASES = {'tflite': 'tflite_float', 'onnx': 'onnx_float'}


def known() -> List[str]:
  """Every `runtime` a report variant may name."""
  from vit_compress import edge  # pylint: disable=g-import-not-at-top
  int8 = [n for n in edge.ARTIFACTS.names() if edge.ARTIFACTS.get(n).precision == 'int8']
  return [JAX, *_FLOAT_ALIASES] + int8


def artifact_name(runtime: str) -> str:
  """The `edge.ARTIFACTS` name of a non-jax runtime ('tflite' -> 'tflite_float')."""
  return _FLOAT_ALIASES.get(runtime, runtime)


def check(runtime: str, where: str) -> None:
  if runtime not in known():
    raise ValueError(f'{where}.runtime: unknown {runtime!r}; choose from {known()}.')


def _metrics(logits: Sequence[np.ndarray], batches, reference: Sequence[np.ndarray]
             ) -> Dict[str, Any]:
  """classification's accuracy and agreement, computed from logits already made."""
  given = lambda p, x: x   # the 'images' fed below are the logits themselves
  scored = [{**b, 'image': l} for b, l in zip(batches, logits)]
  out = classification.accuracy(given, None, scored)
  classes = logits[0].shape[-1]
  both = [{**b, 'image': np.concatenate([l, r], -1)}
          for b, l, r in zip(batches, logits, reference)]
  out['agreement'] = classification.agreement(
      lambda p, x: x[..., :classes], None, both,
      teacher=lambda p, x: x[..., classes:], teacher_params=None)['agreement']
  return out


def score(name: str, runtime: str, forward, params, batches: List[Dict[str, np.ndarray]],
          *, reference: List[np.ndarray], calibration: Callable[[], List[np.ndarray]],
          out_stem: str, batch_sizes: Sequence[int], repeats: int, min_run_s: float,
          threads: int = 0) -> Tuple[Dict[str, Any], Callable[[], Dict[str, float]]]:
  """(report row, measure) for `forward(params, images)` run as `runtime`.

  `reference`: the reference variant's logits per batch (for 'agreement').
  `calibration()`: [training images (N, H, W, 3)] for a calibrated int8
  file (called only then). Files are written to `out_stem` + '_b{B}.tflite' / '.onnx'.
  `measure()` times again (the report's interleaved rounds).
  """
  from vit_compress import edge  # pylint: disable=g-import-not-at-top
  art_name = artifact_name(runtime)
  artifact = edge.ARTIFACTS.get(art_name)
  threads = int(threads or os.cpu_count())
  image_shape = tuple(batches[0]['image'].shape[1:])
  sizes = sorted(set(int(b) for b in batch_sizes))
  images = (calibration()[0] if artifact.calibrated
            else np.zeros((1,) + image_shape, np.float32))
  os.makedirs(os.path.dirname(out_stem) or '.', exist_ok=True)
  blobs, files = {}, {}
  for b in sizes if artifact.runtime == 'tflite' else [None]:
    path = f'{out_stem}_b{b}{artifact.suffix}' if b else out_stem + artifact.suffix
    # A TFLite file is built per batch size; the ONNX blob (batch symbolic) once.
    shape = (b or 1,) + image_shape
    # A TFLite file calibrates in whole batches: fewer images than its batch
    # are repeated to fill one (the same ranges; fixed_batches drops a partial).
    calib = [np.resize(images, (max(len(images), shape[0]),) + image_shape)]
    blob = edge.build(art_name, forward, params, shape, calib,
                      blobs if b is None else {})
    with open(path, 'wb') as f:
      f.write(blob)
    files[b] = path
  predictors = {b: edge.predictor(artifact, files[b if b in files else None], threads)
                for b in sizes}
  largest = sizes[-1]
  predict = predictors[largest]
  logits = [predict(batch['image']) for batch in batches]

  total, nonzero = profiling.count_params(params)
  # Counted as eval.profile counts a JAX row's: at the smallest batch, per image.
  first = np.zeros((sizes[0],) + image_shape, np.float32)
  flops = profiling.compiled_flops(jax.jit(forward).lower(params, first).compile(),
                                   sizes[0])
  rng = np.random.default_rng(0)
  timed = {b: rng.standard_normal((b,) + image_shape).astype(np.float32) for b in sizes}

  def measure() -> Dict[str, float]:
    out = {}
    for b in sizes:
      seconds = profiling._time_calls(  # pylint: disable=protected-access
          lambda p, x, b=b: predictors[b](x), None, timed[b], repeats, 2, min_run_s)
      out[f'img_per_s_b{b}'], out[f'latency_ms_b{b}'] = b / seconds, 1e3 * seconds
    return out

  row = {'name': name, **_metrics(logits, batches, reference), **measure(),
         'params': total, 'nonzero_params': nonzero,
         'sparsity': 1.0 - nonzero / max(total, 1), 'flops': flops,
         'runtime': runtime, 'edge_artifact': art_name,
         'precision': artifact.precision, 'threads': threads,
         'edge_file': files[largest if largest in files else None],
         'bytes_source': f'the {artifact.suffix} file it runs',
         'batch_size': largest,
         'device': f'{artifact.runtime} on {edge.cpu_info()["model"]}, {threads} threads'}
  row['bytes'] = os.path.getsize(row['edge_file'])
  row['img_per_s'] = row[f'img_per_s_b{largest}']
  return row, measure
