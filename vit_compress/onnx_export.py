"""ONNX files of a JAX classifier (float, dynamic int8, static QDQ int8), run in ONNX Runtime.

Model-agnostic: everything takes `apply_fn(params, images) -> logits`, the
params and the image shape (H, W, C), so any family (ViT, Mixer, MobileViT)
exports through the same three calls:

  convert(apply_fn, params, image_shape)     -> float ModelProto bytes (jax2onnx)
  quantize_dynamic(float_blob)               -> int8 weights, activations
                                                quantized at run time (ORT's
                                                MatMulInteger path)
  quantize_static(float_blob, images)        -> QDQ int8: weights and
                                                activations, activation ranges
                                                calibrated on `images`

The float file has a symbolic batch dimension ('batch'), so one file serves
every batch size (unlike TFLite, whose shapes are fixed). The weights are
baked in as initializers; the one graph input is `images` in the model's
input range (float32 NHWC), the one output `logits`.

Files run in `onnxruntime.InferenceSession` on the CPU execution provider
with a stated thread count (`session`).
"""
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from absl import logging
import jax
import numpy as np

PyTree = Any
Model = Union[bytes, str]   # a serialized ModelProto, or a path to a .onnx file
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = 'images', 'logits', 'batch'


# jax2onnx imports every plugin on its first conversion, including its
# equinox plugins and examples, which compile dozens of jitted functions at
# import: 22 s of the 25 s it takes on a 2-core CPU. JAX and Flax models need
# the jax/, flax/ (and dm_pix/) plugins only. This pre-imports those and marks
# discovery done, through jax2onnx 0.17's private plugin_system (the one place
# that touches it); if that API moves, jax2onnx's own full import runs instead.
_PLUGIN_TREES = ('jax', 'flax', 'dm_pix')


def _import_needed_plugins() -> None:
  try:
    from jax2onnx.plugins import plugin_system  # pylint: disable=g-import-not-at-top
    if plugin_system._already_imported_plugins:  # pylint: disable=protected-access
      return
    root = pathlib.Path(plugin_system.__file__).parent
    for tree in _PLUGIN_TREES:
      plugin_system._import_tree(root / tree, f'jax2onnx.plugins.{tree}')  # pylint: disable=protected-access
    plugin_system._already_imported_plugins = True  # pylint: disable=protected-access
  except (ImportError, AttributeError) as e:
    logging.info('jax2onnx plugin pre-import unavailable (%s); it imports all.', e)


def convert(apply_fn: Callable[[PyTree, Any], Any], params: PyTree,
            image_shape: Sequence[int], *, batch_size: Optional[int] = None,
            opset: int = 21) -> bytes:
  """The float ONNX model of `apply_fn(params, images)`; batch symbolic unless given.

  opset 21: ORT's quantizers (QDQ, MatMulInteger) support it; jax2onnx's
  default (23) is newer than they handle. LayerNorm is one native
  `LayerNormalization` node, not its decomposition: ORT fuses it, and static
  quantization cannot put a QDQ pair inside it (quantizing the variance chain
  of the decomposed form took a random Nano's logits to 200 % error).
  """
  import jax2onnx  # pylint: disable=g-import-not-at-top
  _import_needed_plugins()
  params = jax.tree.map(np.asarray, params)
  batch = BATCH_DIM if batch_size is None else int(batch_size)
  shape = (batch,) + tuple(int(d) for d in image_shape)
  proto = jax2onnx.to_onnx(lambda images: apply_fn(params, images), [shape],
                           model_name='classifier', opset=opset,
                           input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                           normalization_mode='prefer_native')
  return proto.SerializeToString()


def _read(model: Model) -> bytes:
  if isinstance(model, (bytes, bytearray)):
    return bytes(model)
  if not os.path.exists(os.fspath(model)):
    raise FileNotFoundError(f'No ONNX file at {model}.')
  with open(os.fspath(model), 'rb') as f:
    return f.read()


def _through_files(fn, model: Model, **kwargs) -> bytes:
  """Runs an ORT quantizer (it reads and writes paths) on bytes or a path."""
  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, 'float.onnx'), os.path.join(tmp, 'int8.onnx')
    with open(src, 'wb') as f:
      f.write(_read(model))
    fn(src, dst, **kwargs)
    with open(dst, 'rb') as f:
      return f.read()


def quantize_dynamic(model: Model, per_channel: bool = True) -> bytes:
  """int8 weights; activations quantized per call from their own range (no calibration)."""
  from onnxruntime import quantization  # pylint: disable=g-import-not-at-top
  return _through_files(quantization.quantize_dynamic, model,
                        weight_type=quantization.QuantType.QInt8,
                        per_channel=per_channel)


class _Images:
  """ORT's CalibrationDataReader over arrays of images, one batch-1 feed at a time."""

  def __init__(self, images: Iterable[np.ndarray], limit: int):
    from vit_compress import tflite  # pylint: disable=g-import-not-at-top
    # The same re-chunking TFLite calibration uses: `limit` single images.
    self._feeds = iter([{INPUT_NAME: x} for x in tflite.fixed_batches(images, 1, limit)])
    self.count = limit

  def get_next(self):
    return next(self._feeds, None)


# Only the matmul-like ops take QDQ pairs: quantizing the residual adds (whose
# range is wide) took a random Nano's logits from 5 % to 50 % error, and they
# are cheap in float. Activations are uint8 and weights int8 (U8S8), the
# format ORT's x86 kernels are built for (signed activations also trip ORT
# 1.32's QDQ pass on a Transpose feeding a Gemm).
STATIC_OPS = ('Conv', 'Gemm', 'MatMul')


def quantize_static(model: Model, representative_images: Iterable[np.ndarray], *,
                    num_calibration: int = 256, per_channel: bool = True) -> bytes:
  """QDQ int8 matmuls: int8 weights, uint8 activations from min-max calibration.

  `representative_images`: arrays (N, H, W, C) of training images in the
  model's input range, as for TFLite int8; the first `num_calibration` used.
  """
  from onnxruntime import quantization  # pylint: disable=g-import-not-at-top
  reader = _Images(representative_images, num_calibration)
  logging.info('Calibrating static int8 ONNX on up to %d images.', num_calibration)
  return _through_files(
      quantization.quantize_static, model, calibration_data_reader=reader,
      quant_format=quantization.QuantFormat.QDQ,
      activation_type=quantization.QuantType.QUInt8,
      weight_type=quantization.QuantType.QInt8, per_channel=per_channel,
      op_types_to_quantize=list(STATIC_OPS),
      calibrate_method=quantization.CalibrationMethod.MinMax)


# ------------------------------------------------------------------- running
def session(model: Model, threads: Optional[int] = None):
  """An ORT CPU session for a path or serialized model (`threads` intra-op threads)."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  options = ort.SessionOptions()
  options.log_severity_level = 3   # no per-node warnings on a normal load
  if threads:
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
  return ort.InferenceSession(_read(model), options, providers=['CPUExecutionProvider'])


def predict(sess, images: np.ndarray) -> np.ndarray:
  """Logits (N, C); a fixed-batch file is fed in its batch, zero-padded."""
  inp = sess.get_inputs()[0]
  want = tuple(inp.shape[1:])
  images = np.asarray(images, np.float32)
  if images.shape[1:] != want:
    raise ValueError(f'The ONNX model takes images of shape {want}; got '
                     f'{images.shape[1:]} (check the eval preprocessing size).')
  from vit_compress import tflite  # pylint: disable=g-import-not-at-top
  batch = inp.shape[0] if isinstance(inp.shape[0], int) else max(len(images), 1)
  return tflite.in_batches(lambda chunk: sess.run([OUTPUT_NAME], {inp.name: chunk})[0],
                           images, batch)
