"""The compact artifact: one .npz that reloads to the same logits, near ideal bytes."""
import os

import jax
import numpy as np

from tests.helpers.params import random_params
from vit_compress import checkpoint
from vit_compress import models
from vit_compress import zoo
from vit_compress.compress import compact
from vit_compress.compress import quantize
from vit_compress.evaluation import profiling


def _model():
  config = zoo.get('Micro_2')
  config.transformer.num_layers = 2
  config.image_size, config.num_classes = 8, 10
  params = random_params(config, scale=0.1)
  return config, params


def _logits(module, params, images):
  return np.asarray(module.apply({'params': params}, images=images, train=False))


def test_int8_model_reloads_with_equal_logits_within_10_percent_of_ideal(tmp_path):
  config, params = _model()
  qparams, qconfig = quantize.quantize(params, config, {'weight_dtype': 'int8'})
  path = str(tmp_path / 'model.npz')
  sizes = compact.save(path, qparams, qconfig)
  module, loaded, loaded_config = compact.load(path)
  images = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
  np.testing.assert_array_equal(
      _logits(module, loaded, images),
      _logits(quantize.quantized_model(qconfig), qparams, images))
  assert checkpoint.config_to_json(loaded_config) == checkpoint.config_to_json(qconfig)
  # The ideal: 1 byte per int8 weight, 4 per float32 value kept, plus scales.
  int8 = sum(a.size for a in jax.tree.leaves(quantize.to_storage(qparams))
             if a.dtype == np.int8)
  floats = sum(a.size for a in jax.tree.leaves(quantize.to_storage(qparams))
               if a.dtype == np.float32)
  assert int8 > 2 * floats and sizes['ideal_bytes'] == int8 + 4 * floats
  assert sizes['bytes'] == os.path.getsize(path) == profiling.artifact_bytes(path)
  assert sizes['ideal_bytes'] < sizes['bytes'] <= 1.10 * sizes['ideal_bytes'], sizes


def test_float_model_round_trip(tmp_path):
  config, params = _model()
  path = str(tmp_path / 'float.npz')
  sizes = compact.save(path, params, config)
  module, loaded, _ = compact.load(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert sizes['bytes'] <= 1.05 * 4 * models.count_params(params)
  images = np.zeros((1, 8, 8, 3), np.float32)
  np.testing.assert_array_equal(_logits(module, loaded, images),
                                _logits(models.build(config), params, images))
