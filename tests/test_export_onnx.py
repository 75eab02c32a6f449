"""ONNX export (jax2onnx) of a trained tiny ViT, checked in ONNX Runtime."""
import jax
import numpy as np
import pytest

from tests.helpers import tiny_task
from vit_compress import models
from vit_compress import onnx_export
from vit_compress.evaluation import classification


def test_onnx_float_dynamic_and_static_int8(trained):
  config, params, _ = trained
  params = jax.device_get(params)
  fn = classification.forward_fn(models.build(config))
  images, _ = tiny_task.eval_set()
  images = images[:500]
  reference = np.asarray(jax.jit(fn)(params, images))
  top1 = reference.argmax(-1)

  blob = onnx_export.convert(fn, params, images.shape[1:])
  # One file, any batch: the batch dimension is symbolic.
  sess = onnx_export.session(blob, threads=1)
  assert sess.get_inputs()[0].shape[0] == onnx_export.BATCH_DIM
  logits = onnx_export.predict(sess, images)
  assert logits.shape == reference.shape
  error = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
  assert error < 1e-5
  assert np.array_equal(logits.argmax(-1), top1)

  calibration = [tiny_task.sample(64, seed=100 + s)[0] for s in range(2)]
  for name, int8 in (('dynamic', onnx_export.quantize_dynamic(blob)),
                     ('static', onnx_export.quantize_static(
                         blob, calibration, num_calibration=128))):
    assert len(int8) < 0.75 * len(blob), name   # int8 weights (a tiny model: graph weighs in)
    logits = onnx_export.predict(onnx_export.session(int8, threads=1), images)
    error = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
    agreement = 100 * np.mean(logits.argmax(-1) == top1)
    print(f'{name}: {len(int8)} of {len(blob)} bytes, logit error {error:.4f}, '
          f'top-1 agreement {agreement:.1f} %')
    assert 0 < error < 0.1, name          # quantized, and still the same function
    assert agreement >= 97, name


def test_onnx_rejects_the_wrong_image_shape(trained):
  config, params, _ = trained
  params = jax.device_get(params)
  fn = classification.forward_fn(models.build(config))
  sess = onnx_export.session(onnx_export.convert(fn, params, (8, 8, 3)))
  with pytest.raises(ValueError, match='images of shape'):
    onnx_export.predict(sess, np.zeros((2, 16, 16, 3), np.float32))
