"""TFLite files of our models (float and full-integer int8), and running them.

Conversion: the JAX forward with the weights baked in -> `jax2tf.convert` ->
a `tf.function` with a fixed input shape -> `TFLiteConverter`. The shape is
fixed (batch 1 by default, what an edge device runs) because TFLite cannot
legalise the dynamic gather that a symbolic batch dimension produces.

Two layers are traced in a form that is the same function in float but
quantizes better (on a digits Mini_4 they took int8 from 99.8 % to 100 %
agreement with the float model, and halved the logit error):
- attention applies the 1/sqrt(head_dim) scale to the queries, not to the
  logits: the converter ties the range of a scaled-logits tensor to that of
  its row maximum (softmax's max subtraction) and clips the negative logits;
- LayerNorm takes its mean and variance as matmuls with a 1/D vector, which
  accumulate in int32, instead of int8 sums over D channels.

int8 comes in two modes (`int8_mode`). 'full' is TFLite's full-integer
post-training quantization: a representative dataset (training images)
calibrates the activation ranges, weights and activations become int8
(weights per output channel unless `per_channel=False`), with float input
and output by default (`int8_io=True` makes them int8 too). 'dynamic' is
dynamic-range quantization: int8 weights, float activations that the
fully-connected kernels quantize per call from their own range. On x86 CPUs
with AVX-512 'dynamic' is the fast one at ViT sizes: ViT-Ti/16 at 224 px,
batch 1, 2 threads, AMD EPYC (Zen 4, AVX-512 VNNI), dynamic ran 1.9x the
float file and full-integer 0.5x (bench/README.md); its logit error is also
about 6x smaller (no calibrated range clips an activation). Tensor names (JAX source locations,
debugging only) are stripped from both files: they cost a tiny model a
noticeable share of its size and carry no behaviour.

Files run in the LiteRT interpreter (`ai_edge_litert`), or TensorFlow's
`tf.lite.Interpreter` where LiteRT is not installed.
"""
import contextlib
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from vit_compress import litert_private

PyTree = Any
Model = Union[bytes, str]   # the flatbuffer, or a path to a .tflite file


def fixed_batches(images: Iterable[np.ndarray], batch_size: int, limit: int):
  """Re-chunks arrays of images into exactly `batch_size` (drops the rest)."""
  pool, out, seen = [], [], 0
  for chunk in images:
    chunk = np.asarray(chunk, np.float32)
    pool.extend(chunk[:max(limit - seen, 0)])
    seen = min(seen + len(chunk), limit)
    while len(pool) >= batch_size:
      out.append(np.stack(pool[:batch_size]))
      pool = pool[batch_size:]
    if seen >= limit:
      break
  return out


# int8 TFLite modes: 'full' = full-integer post-training quantization (int8
# weights and activations, activation ranges calibrated on training images);
# 'dynamic' = dynamic-range quantization (int8 weights, float activations
# quantized per call from their own range; no calibration).
INT8_MODES = ('full', 'dynamic')


def _attention_for_tflite(query, key, value, bias=None, mask=None, *,
                          scale=None, **options):
  """`jax.nn.dot_product_attention` for (B, T, N, H) inputs, scale on the queries."""
  unsupported = {k: v for k, v in options.items() if v not in (None, False)}
  if unsupported:
    raise NotImplementedError(f'TFLite export: attention options {unsupported} '
                              'are not supported.')
  scale = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
  logits = jnp.einsum('btnh,bsnh->bnts', query * jnp.asarray(scale, query.dtype), key)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
  return jnp.einsum('bnts,bsnh->btnh', probs, value)


def _layernorm_for_tflite(next_fun, args, kwargs, context):
  """Flax interceptor: LayerNorm over the last axis with matmul means."""
  module = context.module
  if (not isinstance(module, nn.LayerNorm) or context.method_name != '__call__'
      or module.reduction_axes != -1 or module.feature_axes != -1
      or module.is_mutable_collection('params')):  # init: let it make its params
    return next_fun(*args, **kwargs)
  x = jnp.asarray(args[0], jnp.float32)
  average = jnp.full((x.shape[-1], 1), 1.0 / x.shape[-1], jnp.float32)
  centred = x - x @ average
  y = centred * jax.lax.rsqrt((centred * centred) @ average + module.epsilon)
  if module.use_scale:
    y = y * module.get_variable('params', 'scale')
  if module.use_bias:
    y = y + module.get_variable('params', 'bias')
  return y.astype(module.dtype or args[0].dtype)


@contextlib.contextmanager
def _tflite_friendly_layers():
  """Traces attention and LayerNorm in their TFLite forms (see the module doc)."""
  original = jax.nn.dot_product_attention
  jax.nn.dot_product_attention = _attention_for_tflite
  try:
    with nn.intercept_methods(_layernorm_for_tflite):
      yield
  finally:
    jax.nn.dot_product_attention = original


def _strip_strings(blob: bytes) -> bytes:
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
  flatbuffer_utils.strip_strings(model)
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert(apply_fn: Callable[[PyTree, Any], Any], params: PyTree,
            image_shape: Sequence[int], *, batch_size: int = 1,
            int8: bool = False, int8_mode: str = 'full',
            representative_images: Optional[Iterable[np.ndarray]] = None,
            num_calibration: int = 256, per_channel: bool = True,
            int8_io: bool = False, strip: bool = True) -> bytes:
  """The .tflite flatbuffer of `apply_fn(params, images) -> logits`.

  `int8_mode` (int8 only): 'full' (full-integer, calibrated) or 'dynamic'
  (see INT8_MODES). `representative_images` ('full' only): arrays
  (N, H, W, 3) of training images in the model's input range; the first
  `num_calibration` are used.
  """
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  shape = (int(batch_size),) + tuple(int(d) for d in image_shape)
  params = jax.tree.map(np.asarray, params)
  forward = jax2tf.convert(lambda images: apply_fn(params, images),
                           with_gradient=False)
  fn = tf.function(forward, autograph=False,
                   input_signature=[tf.TensorSpec(shape, tf.float32, name='images')])
  with _tflite_friendly_layers():
    concrete = fn.get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
  if int8 and int8_mode not in INT8_MODES:
    raise ValueError(f'Unknown int8_mode {int8_mode!r}; choose from {list(INT8_MODES)}.')
  if int8 and int8_mode == 'dynamic':
    # No representative data: weights become int8, activations stay float and
    # are quantized per call inside the hybrid kernels.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    litert_private.set_per_channel(converter, per_channel)
  elif int8:
    if representative_images is None:
      raise ValueError('int8 TFLite needs representative_images: a few hundred '
                       'training images calibrate the activation ranges.')
    calibration = fixed_batches(representative_images, shape[0], num_calibration)
    if not calibration:
      raise ValueError('int8 TFLite: representative_images gave no image.')
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    litert_private.set_per_channel(converter, per_channel)
    if int8_io:
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
    logging.info('Calibrating int8 TFLite on %d images.',
                 len(calibration) * shape[0])
  blob = converter.convert()
  return _strip_strings(blob) if strip else blob


# ------------------------------------------------------------------- running
def interpreter(model: Model, num_threads: Optional[int] = None, **options):
  """An allocated interpreter for a .tflite path or flatbuffer (LiteRT first)."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError:
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  if isinstance(model, (bytes, bytearray)):
    interp = Interpreter(model_content=bytes(model), num_threads=num_threads,
                         **options)
  else:
    if not tf.io.gfile.exists(os.fspath(model)):
      raise FileNotFoundError(f'No TFLite file at {model}.')
    with tf.io.gfile.GFile(os.fspath(model), 'rb') as f:
      interp = Interpreter(model_content=f.read(), num_threads=num_threads,
                           **options)
  interp.allocate_tensors()
  return interp


def _quantize(x: np.ndarray, detail) -> np.ndarray:
  scale, zero = detail['quantization']
  if detail['dtype'] == np.float32 or not scale:
    return x.astype(detail['dtype'])
  info = np.iinfo(detail['dtype'])
  return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail['dtype'])


def _dequantize(y: np.ndarray, detail) -> np.ndarray:
  scale, zero = detail['quantization']
  if y.dtype == np.float32 or not scale:
    return y.astype(np.float32)
  return (y.astype(np.float32) - zero) * scale


def predict(interp, images: np.ndarray) -> np.ndarray:
  """Logits (N, C) for any number of images: fed in the file's fixed batch."""
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  batch, want = int(inp['shape'][0]), tuple(int(d) for d in inp['shape'][1:])
  images = np.asarray(images, np.float32)
  if images.shape[1:] != want:
    raise ValueError(f'The TFLite model takes images of shape {want}; got '
                     f'{images.shape[1:]} (check the eval preprocessing size).')
  def run(chunk):
    interp.set_tensor(inp['index'], _quantize(chunk, inp))
    interp.invoke()
    return _dequantize(interp.get_tensor(out['index']), out)
  return in_batches(run, images, batch)


def in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
               batch: int) -> np.ndarray:
  """`run` over `images` in chunks of exactly `batch` (the last zero-padded),
  outputs of the padding dropped: how a fixed-shape file sees any number."""
  outputs = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    real = len(chunk)
    if real < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - real,) + chunk.shape[1:],
                                              chunk.dtype)])
    outputs.append(run(chunk)[:real])
  return np.concatenate(outputs)


def accuracy(model: Model, batches: Iterable[Mapping[str, Any]]) -> Dict[str, float]:
  """Interpreter top-1 (%) over the real (mask 1) examples of `batches`."""
  interp = interpreter(model)
  correct = count = 0
  for batch in batches:
    images = np.asarray(batch['image'])
    real = np.asarray(batch.get('mask', np.ones(len(images)))) > 0
    labels = (np.asarray(batch['label']) if 'label' in batch
              else np.argmax(np.asarray(batch['labels']), -1))
    logits = predict(interp, images[real])
    correct += int(np.sum(np.argmax(logits, -1) == labels[real]))
    count += int(real.sum())
  if not count:
    raise ValueError('tflite.accuracy: no real example in the batches.')
  return {'top1': 100.0 * correct / count, 'count': count}


def describe(model: Model) -> Dict[str, Any]:
  """Size, input dtype and how much of the graph is integer (for reports)."""
  interp = interpreter(model)
  ops = litert_private.ops_details(interp)
  tensors = {t['index']: t for t in interp.get_tensor_details()}
  integer_ops = [op['op_name'] for op in ops
                 if op['outputs'].size and all(
                     tensors[i]['dtype'] in (np.int8, np.int16, np.int32)
                     for i in op['outputs'] if i >= 0)]
  return {'ops': len(ops), 'integer_ops': len(integer_ops),
          'input_dtype': np.dtype(interp.get_input_details()[0]['dtype']).name,
          'input_shape': [int(d) for d in interp.get_input_details()[0]['shape']]}


def xnnpack_fallback(model: Model) -> Dict[str, int]:
  """{'OP(dtype)': count} of the ops the XNNPACK delegate leaves to TFLite's kernels."""
  found = litert_private.xnnpack_fallback(lambda **options: interpreter(model, **options))
  return {f'{name}({kind})': n for (name, kind), n in sorted(found.items())}
