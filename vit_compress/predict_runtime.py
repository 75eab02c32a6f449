"""Predict with a `.tflite` or `.onnx` file, run in its own runtime.

    p = predict.load('export/model_float.tflite')   # or an edge artifact's .onnx
    p(['a.png'])     # [[(class name, probability), ...] per image]

A TFLite or ONNX file holds the graph only (images in, logits out). What it
needs besides, the eval preprocessing and the class names, is the model
config that export writes beside it: `<file stem>.model_config.json` (the
convention of our `.npz` export), whose `inference` record is the one a
saved model carries (`checkpoint_files.recorded_data`). `export_tflite` and
`edge.export_optimized` write it for every file they write.

Invariant: the logits are the runtime's (LiteRT / ONNX Runtime, through
`edge.predictor`), never JAX's; only the pp string and the names come from
the sidecar, or from `pp=` / `class_names=` where a file has none.
"""
import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from vit_compress import artifact
from vit_compress import predictor as predictor_lib

# The edge artifact whose runtime runs a file of each suffix (any precision:
# the runtimes read a file's own input and output quantization).
_RUNTIME_OF = {'.tflite': 'tflite_float', '.onnx': 'onnx_float'}
SUFFIXES = tuple(_RUNTIME_OF)


@dataclasses.dataclass
class RuntimePredictor(predictor_lib.Predictor):
  """A Predictor whose logits come from a TFLite / ONNX runtime."""
  run: Optional[Callable[[np.ndarray], np.ndarray]] = None
  path: str = ''

  def __post_init__(self):   # no JAX model to compile: only the pp
    from vit_compress.data import preprocess  # pylint: disable=g-import-not-at-top
    self._pp_fn = preprocess.build(self.pp)

  def logits(self, images) -> np.ndarray:
    return np.asarray(self.run(self.preprocess(images)))

  def embed(self, images) -> np.ndarray:
    raise ValueError(f'{self.path} computes logits only (the exported graph ends '
                     'at the classifier): embeddings come from the saved model '
                     'or .npz it was exported from.')


def load(path: str, *, pp: Optional[str] = None,
         class_names: Optional[Sequence[str]] = None,
         threads: Optional[int] = None) -> RuntimePredictor:
  """A RuntimePredictor for a .tflite / .onnx file and its sidecar config."""
  from vit_compress import checkpoint_files  # pylint: disable=g-import-not-at-top
  from vit_compress import edge  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1]
  if suffix not in _RUNTIME_OF:
    raise ValueError(f'{path}: predict runs {list(SUFFIXES)} files in their runtimes.')
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'No file {path}.')
  sidecar = artifact.sidecar_path(path)   # the artifact layout's one home
  model_config: Any = ml_collections.ConfigDict()
  if tf.io.gfile.exists(sidecar):
    model_config = checkpoint_files.read_model_config(sidecar)
  recorded = checkpoint_files.recorded_data(model_config)
  pp = pp or recorded.get('pp_eval')
  names = tuple(class_names or recorded.get('class_names') or ())
  if not pp or not names:
    why = (f'its {os.path.basename(sidecar)} records no eval preprocessing and '
           'class names (it was exported from weights that record none: a zoo '
           'name with a checkpoint, or a model saved before vit_compress recorded them)'
           if tf.io.gfile.exists(sidecar) else
           f'it has no {os.path.basename(sidecar)} beside it, which export writes '
           'with the pp string and class names (files exported earlier have none)')
    raise ValueError(f'{path}: {why}. Pass --pp=\'decode|resize(224)|value_range(-1, 1)\' '
                     '(the eval pp) and --class_names=a,b,... (or predict.load(path, '
                     'pp=..., class_names=...)).')
  run = edge.predictor(edge.ARTIFACTS.get(_RUNTIME_OF[suffix]), path,
                       int(threads or os.cpu_count()))
  return RuntimePredictor(model_config, None, None, predictor_lib.image_pp(pp), names,
                          run=run, path=path)
