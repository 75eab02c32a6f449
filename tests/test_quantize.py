"""Quantization with qwix on a tiny trained ViT: accuracy, integer storage, reload.

The `check_*` functions take (model config, float params, eval function) so
they run unchanged on a model trained on digits.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix

from vit_compress import checkpoint
from vit_compress import models
from vit_compress import param_paths
from vit_compress.compress import quantize
from vit_compress.evaluation import profiling

from tests.helpers import tiny_task


def calibration_batches(n=4):
  data = tiny_task.batches(64, seed=5)
  return [next(data) for _ in range(n)]


def quantized_leaves(qparams):
  """{path: WithAux} of the quantized kernels."""
  leaves = jax.tree_util.tree_flatten_with_path(
      qparams, is_leaf=quantize.is_quantized)[0]
  return {param_paths.path_str(k): v for k, v in leaves
          if quantize.is_quantized(v) and isinstance(v.array, qwix.QArray)}


def ptq_accuracy(config, params, eval_fn, quant_config, batches=None):
  qparams, qconfig = quantize.quantize(params, config, quant_config,
                                       batches=batches)
  return eval_fn(quantize.quantized_model(qconfig), qparams), qparams, qconfig


# ------------------------------------------------------------------ checks
def check_int8_weight_only(config, params, eval_fn, workdir):
  """<= 0.5 points, >= 3.5x smaller quantized layers, reload gives same logits."""
  float_acc = eval_fn(models.build(config), params)
  acc, qparams, qconfig = ptq_accuracy(config, params, eval_fn,
                                       {'weight_dtype': 'int8'})
  assert abs(acc - float_acc) <= 0.5, (float_acc, acc)

  report = quantize.save_quantized(str(workdir / 'int8'), qparams, qconfig)
  assert report['ratio'] >= 3.5, report
  model, loaded, loaded_config = quantize.load_quantized(str(workdir / 'int8'))
  assert loaded_config.quant.weight_dtype == 'int8'
  images, _ = tiny_task.sample(16, seed=3)
  np.testing.assert_array_equal(
      tiny_task.logits(model, loaded, images),
      tiny_task.logits(quantize.quantized_model(qconfig), qparams, images))

  # On disk the integers save most of what they save in memory (orbax's file
  # layout, split by its writer threads, moves the total by a few KiB).
  checkpoint.save_model(str(workdir / 'float'), params, config)
  disk_saving = (profiling.artifact_bytes(workdir / 'float')
                 - profiling.artifact_bytes(workdir / 'int8'))
  assert disk_saving >= 0.75 * (report['float32_bytes'] - report['quantized_bytes'])
  return float_acc, acc, report


# ------------------------------------------------------------------- tests
def test_int8_weight_only_accuracy_size_and_reload(trained, tmp_path):
  config, params, eval_fn = trained
  float_acc, acc, report = check_int8_weight_only(config, params, eval_fn,
                                                  tmp_path)
  assert float_acc > 80  # the task was learnt, so the comparison means something
  # 2 layers x (query, key, value, out, Dense_0, Dense_1).
  assert report['quantized_kernels'] == 12


def test_int8_kernels_are_integers_with_per_channel_scales(trained):
  config, params, _ = trained
  qparams, _ = quantize.quantize(params, config, {'weight_dtype': 'int8'})
  leaves = quantized_leaves(qparams)
  expected = {f'Transformer/encoderblock_{i}/{m}/kernel' for i in range(2)
              for m in ('MultiHeadDotProductAttention_0/query',
                        'MultiHeadDotProductAttention_0/key',
                        'MultiHeadDotProductAttention_0/value',
                        'MultiHeadDotProductAttention_0/out',
                        'MlpBlock_0/Dense_0', 'MlpBlock_0/Dense_1')}
  assert set(leaves) == expected
  # Embedding, head and LayerNorm stay float by default.
  for name in ('embedding', 'head'):
    assert qparams[name]['kernel'].dtype == jnp.float32
  kernel = params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel']
  q = leaves['Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'].array
  assert q.qvalue.dtype == jnp.int8 and q.qvalue.shape == kernel.shape
  # One scale per output channel: the column's absmax over qwix's bound 127.5.
  np.testing.assert_allclose(q.scale, np.abs(kernel).max(0, keepdims=True) / 127.5,
                             rtol=1e-6)
  error = np.abs(np.asarray(qwix.dequantize(q)) - np.asarray(kernel))
  assert np.all(error <= np.asarray(q.scale) / 2 + 1e-7)


def test_exclude_keeps_more_layers_float(trained):
  config, params, _ = trained
  quant_config = quantize.default_config()
  quant_config.exclude = list(quant_config.exclude) + [r'MlpBlock_0/Dense_1$']
  qparams, _ = quantize.quantize(params, config, quant_config)
  leaves = quantized_leaves(qparams)
  assert len(leaves) == 10 and not any('Dense_1' in p for p in leaves)
  dense_1 = qparams['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_1']
  np.testing.assert_array_equal(
      dense_1['kernel'],
      params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_1']['kernel'])


def test_int4_is_packed_two_per_byte(trained, tmp_path):
  config, params, eval_fn = trained
  acc, qparams, qconfig = ptq_accuracy(config, params, eval_fn,
                                       {'weight_dtype': 'int4'})
  leaves = quantized_leaves(qparams)
  assert all(v.array.qvalue.dtype == jnp.int4 for v in leaves.values())
  report = quantize.save_quantized(str(tmp_path / 'int4'), qparams, qconfig)
  # Stored bytes: half a byte per weight plus float32 scales, exactly.
  expected = sum(math.ceil(v.array.qvalue.size / 2) + 4 * v.array.scale.size
                 for v in leaves.values())
  assert report['quantized_bytes'] == expected
  assert report['float32_bytes'] == sum(4 * v.array.qvalue.size
                                        for v in leaves.values())
  assert report['ratio'] > 6  # ~8x for wide layers; scales weigh on 32-wide ones
  model, loaded, _ = quantize.load_quantized(str(tmp_path / 'int4'))
  assert eval_fn(model, loaded) == acc


def test_int4_pack_unpack_roundtrip():
  values = jnp.asarray(np.arange(-8, 8).tolist() * 3 + [5], jnp.int4)  # odd size
  packed = quantize.pack_int4(values)
  assert packed.dtype == np.uint8 and packed.size == (values.size + 1) // 2
  np.testing.assert_array_equal(
      quantize.unpack_int4(packed, values.shape).astype(jnp.int8),
      values.astype(jnp.int8))


@pytest.mark.parametrize('calibration', ['absmax', 'percentile'])
def test_static_w8a8_within_one_point(trained, calibration):
  config, params, eval_fn = trained
  batches = calibration_batches()
  float_acc = eval_fn(models.build(config), params)
  acc, _, _ = ptq_accuracy(
      config, params, eval_fn,
      {'weight_dtype': 'int8', 'act_dtype': 'int8', 'act_static': True,
       'calibration': calibration, 'calibration_batches': len(batches)},
      batches=batches)
  assert float_acc > 80   # the task was learnt
  assert abs(acc - float_acc) <= 1.0, (calibration, float_acc, acc)


def test_static_scales_are_the_calibration_statistics(trained, tmp_path):
  """Layer 0's query input (LayerNorm_0 of the float embedding) is the same in
  every run, so its static scale can be recomputed from the float model."""
  config, params, _ = trained
  batches = calibration_batches(2)
  model = models.build(config)
  _, state = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, capture_intermediates=True, mutable=['intermediates']))(
          params, np.concatenate([b['image'] for b in batches]))
  x = np.abs(np.asarray(state['intermediates']['Transformer']['encoderblock_0'][
      'LayerNorm_0']['__call__'][0])).reshape(2, 64, 17, 32)
  expected = {
      # qwix: per example and token, the max over channels; mean over examples.
      'absmax': x.max(-1).mean(1).mean(0),
      # ours: per token, the percentile over examples and channels.
      'percentile': np.percentile(x.transpose(0, 2, 1, 3).reshape(2, 17, -1),
                                  99.0, axis=-1).mean(0)}
  for calibration, statistic in expected.items():
    qparams, qconfig = quantize.quantize(
        params, config, {'act_dtype': 'int8', 'act_static': True,
                         'calibration': calibration, 'percentile': 99.0,
                         'calibration_batches': 2},
        batches=batches)
    scale = qparams['Transformer']['encoderblock_0'][
        'MultiHeadDotProductAttention_0']['query']['dot_general0_lhs_scale']
    assert scale.array.shape == (1, 17, 1)  # qwix: one per token position
    np.testing.assert_allclose(np.asarray(scale.array).reshape(17),
                               statistic / 127.5, rtol=1e-5)
  # The static scales are part of the artifact.
  quantize.save_quantized(str(tmp_path / 'w8a8'), qparams, qconfig)
  model, loaded, _ = quantize.load_quantized(str(tmp_path / 'w8a8'))
  images, _ = tiny_task.sample(16, seed=4)
  np.testing.assert_array_equal(
      tiny_task.logits(model, loaded, images),
      tiny_task.logits(quantize.quantized_model(qconfig), qparams, images))


def test_dynamic_w8a8_within_one_point(trained):
  config, params, eval_fn = trained
  float_acc = eval_fn(models.build(config), params)
  acc, qparams, _ = ptq_accuracy(config, params, eval_fn,
                                 {'act_dtype': 'int8', 'act_static': False})
  assert abs(acc - float_acc) <= 1.0, (float_acc, acc)
  assert not [p for p in param_paths.path_names(qparams) if p.endswith('_scale')]


@pytest.mark.slow
def test_qat_int4_recovers_float_accuracy(trained):
  config, params, eval_fn = trained
  float_acc = eval_fn(models.build(config), params)
  quant_config = {'mode': 'qat', 'weight_dtype': 'int4'}
  qat = quantize.qat_model(models.build(config), quant_config)
  # Fake quantization computes what the integer model computes.
  qparams, qconfig = quantize.quantize(params, config, quant_config)
  images, _ = tiny_task.sample(32, seed=6)
  np.testing.assert_allclose(
      tiny_task.logits(qat, params, images),
      tiny_task.logits(quantize.quantized_model(qconfig), qparams, images),
      atol=1e-4)
  tuned = tiny_task.train(qat, params, steps=300, lr=0.02, seed=9)
  acc, _, _ = ptq_accuracy(config, tuned, eval_fn, quant_config)
  # Training longer helps this small model either way, so compare with the
  # float model trained exactly as long too.
  float_model = models.build(config)
  longer = eval_fn(float_model, tiny_task.train(float_model, params, steps=300,
                                                lr=0.02, seed=9))
  assert acc >= max(float_acc, longer) - 1.0, (float_acc, longer, acc)


def test_config_errors_name_the_key(trained):
  config, params, _ = trained
  with pytest.raises(ValueError, match='weight_dtyp'):
    quantize.resolve({'weight_dtyp': 'int8'})
  with pytest.raises(ValueError, match='act_static=True needs act_dtype'):
    quantize.resolve({'act_static': True})
  with pytest.raises(ValueError, match='weight_dtype'):
    quantize.resolve({'weight_dtype': 'int2'})
  with pytest.raises(ValueError, match='list of regexes'):
    quantize.resolve({'exclude': 'head'})
  with pytest.raises(ValueError, match='not a valid regular expression'):
    quantize.resolve({'include': '('})
  with pytest.raises(ValueError, match='selects no weight layer'):
    quantize.quantize(params, config, {'include': 'no_such_module'})
  with pytest.raises(ValueError, match='need calibration'):
    quantize.quantize(params, config, {'act_dtype': 'int8', 'act_static': True})
