"""Export: vit_jax .npz, the shrunk + quantized artifact, TFLite float and int8."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from tests.helpers import pruning_helpers
from tests.helpers import tiny_task
from vit_compress import checkpoint
from vit_compress import evaluation
from vit_compress import config_schema
from vit_compress import export
from vit_compress import models
from vit_compress import tflite
from vit_compress.compress import quantize

pytestmark = pytest.mark.slow   # integration: see pytest.ini


@pytest.fixture(scope='module')
def trained_host(trained):
  """conftest's tiny model with host (numpy) params, and its eval set in
  batches of 500."""
  config, params, _ = trained
  images, labels = tiny_task.eval_set()
  batches = [{'image': images[i:i + 500], 'label': labels[i:i + 500]}
             for i in range(0, len(images), 500)]
  return config, jax.device_get(params), batches


def _representative():
  return [tiny_task.sample(64, seed=100 + s)[0] for s in range(4)]


def test_tflite_float_and_int8(trained_host, tmp_path):
  config, params, batches = trained_host
  jax_top1 = evaluation.accuracy(models.build(config), params, batches)['top1']
  assert jax_top1 > 80  # the model has learnt the task

  float_file = export.export_tflite(config, params, str(tmp_path / 'f.tflite'))
  assert float_file['bytes'] == os.path.getsize(tmp_path / 'f.tflite')
  assert float_file['integer_ops'] == 0 and float_file['input_shape'] == [1, 8, 8, 3]
  images = batches[0]['image'][:64]
  lite_logits = tflite.predict(tflite.interpreter(float_file['path']), images)
  jax_logits = np.asarray(jax.jit(models.build(config).apply)({'params': params}, images))
  np.testing.assert_allclose(lite_logits, jax_logits, atol=1e-4)
  assert tflite.accuracy(float_file['path'], batches)['top1'] == jax_top1

  int8_file = export.export_tflite(config, params, str(tmp_path / 'q.tflite'), int8=True,
                                   representative_images=_representative())
  assert int8_file['integer_ops'] > 0.85 * int8_file['ops']
  # Weights are 1 byte instead of 4, but graph and quantization parameters
  # weigh more in a 27k-parameter model: about 1.9x here, 3.5x from ViT-Ti size.
  assert float_file['bytes'] / int8_file['bytes'] > 1.8
  int8 = tflite.accuracy(int8_file['path'], batches)
  assert int8['count'] == 2000
  assert abs(int8['top1'] - jax_top1) <= 0.5

  # int8 input and output: images are quantized on the way in.
  io_file = export.export_tflite(config, params, str(tmp_path / 'io.tflite'), int8=True,
                                 int8_io=True, representative_images=_representative())
  assert io_file['input_dtype'] == 'int8'
  assert abs(tflite.accuracy(io_file['path'], batches)['top1'] - jax_top1) <= 1.0


def test_npz_export_reads_back_with_the_importer(trained_host, tmp_path):
  config, params, _ = trained_host
  result = export.export_npz(config, params, str(tmp_path / 'nano.npz'))
  with np.load(result['path'], allow_pickle=False) as f:
    keys = set(f.files)
  assert 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel' in keys
  assert 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel' in keys
  assert len(keys) == len(jax.tree.leaves(params))
  with open(result['config']) as f:
    assert ml_collections.ConfigDict(json.load(f)).transformer.mlp_dim == 128
  loaded = checkpoint.load_npz(result['path'], config)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_artifact_is_shrunk_and_quantized(trained_host, tmp_path):
  config, params, batches = trained_host
  params = jax.tree.map(np.array, params)
  # Prune as the trainer saves pruned models: head 1 of block 1 and 64 MLP
  # neurons of block 0 are zeros.
  pruning_helpers.zero_head(params, block=1, head=1)
  mlp = params['Transformer']['encoderblock_0']['MlpBlock_0']
  mlp['Dense_0']['kernel'][:, 64:] = 0
  mlp['Dense_0']['bias'][64:] = 0
  mlp['Dense_1']['kernel'][64:] = 0
  checkpoint.save_model(str(tmp_path / 'pruned'), params, config)

  result = export.export_artifact(config, params, str(tmp_path / 'artifact'))
  assert tuple(result['num_heads']) == (2, 1) and tuple(result['mlp_dim']) == (64, 128)
  removed = 3 * (32 * 16 + 16) + 16 * 32 + 64 * (32 + 1 + 32)
  assert result['params_after_shrink'] == 26_794 - removed
  model, qparams, qconfig = quantize.load_quantized(result['path'])
  assert qconfig.transformer.num_heads == (2, 1)
  arrays = result['quantization']
  assert arrays['model_float32_bytes'] == 4 * result['params_after_shrink']
  assert arrays['model_bytes'] < arrays['model_float32_bytes'] / 2.5
  # On disk, orbax's metadata (~30 kB) weighs in as well.
  assert result['bytes'] < evaluation.artifact_bytes(str(tmp_path / 'pruned'))
  # The small int8 model predicts what the pruned float model predicts.
  agreement = evaluation.agreement(model, qparams, batches, teacher=models.build(config),
                                 teacher_params=params)
  assert agreement['agreement'] >= 97.0


def test_run_from_a_workdir_on_digits(trained_host, tmp_path, digits_data_dir):
  config, params, _ = trained_host
  workdir = str(tmp_path / 'run')
  checkpoint.save_model(os.path.join(workdir, 'model'), params, config)
  exp = config_schema.defaults()
  exp.data_dir = digits_data_dir
  exp.eval_batch_size = 128
  summary = export.run(exp, workdir, ['npz', 'tflite', 'tflite_int8'],
                       num_calibration=64)
  out = os.path.join(workdir, 'export')
  assert sorted(os.listdir(out)) == ['model.model_config.json', 'model.npz',
                                     'model_float.model_config.json', 'model_float.tflite',
                                     'model_int8.model_config.json', 'model_int8.tflite',
                                     'summary.json']
  with open(os.path.join(out, 'summary.json')) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  # This model never saw digits; what matters is that the float file scores
  # exactly what JAX scores, on every test example.
  assert summary['tflite']['tflite_top1'] == summary['tflite']['jax_top1']
  assert summary['tflite']['count'] == summary['tflite_int8']['count'] > 300
  assert summary['tflite_int8_size_ratio'] == pytest.approx(
      summary['tflite']['bytes'] / summary['tflite_int8']['bytes'])


def test_clear_errors(trained_host, tmp_path):
  config, params, _ = trained_host
  with pytest.raises(FileNotFoundError, match='model/'):
    export.find_saved_model(str(tmp_path))
  qparams, qconfig = quantize.quantize(params, config, {'mode': 'ptq'})
  quantize.save_quantized(str(tmp_path / 'q'), qparams, qconfig)
  with pytest.raises(ValueError, match='quantized model'):
    export.load_float_model(str(tmp_path / 'q'))
  with pytest.raises(ValueError, match='Unknown export format'):
    export.run(config_schema.defaults(), str(tmp_path), ['onnx'])
  with pytest.raises(ValueError, match='representative_images'):
    export.export_tflite(config, params, str(tmp_path / 'x.tflite'), int8=True)
