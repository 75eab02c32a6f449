"""MobileViT_XXS trained on digits at 32 px, then PTQ int8 (convs too), TFLite,
ONNX and a report row."""
import jax
import numpy as np
import pytest

from tests.helpers.train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import export
from vit_compress import models
from vit_compress import onnx_export
from vit_compress import param_paths
from vit_compress import tflite
from vit_compress import train
from vit_compress.compress import compact
from vit_compress.compress import quantize
from vit_compress.evaluation import report
from vit_compress.evaluation import classification

pytestmark = pytest.mark.slow   # integration: see pytest.ini

PP_32PX = 'decode|resize(32)|to_rgb|value_range(-1, 1)|onehot'


@pytest.fixture(scope='module')
def mobilevit_run(digits_data_dir, tmp_path_factory):
  """configs/augreg.py:MobileViT_XXS,digits at 32 px, 60 Adam steps."""
  workdir = tmp_path_factory.mktemp('mobilevit_digits')
  config = digits_config(digits_data_dir, 'MobileViT_XXS', total_steps=60,
                         checkpoint_every=60, log_every=60,
                         **{'model.image_size': 32, 'pp_train': PP_32PX,
                            'pp_eval': PP_32PX, 'schedule.base_lr': 0.003,
                            'schedule.warmup_steps': 20})
  metrics = train.train_and_evaluate(config, str(workdir))
  model_config, params = checkpoint.load_model(str(workdir / 'model'))
  return train.prepare(config), metrics, model_config, params


def test_mobilevit_xxs_reaches_90_percent_on_digits(mobilevit_run):
  config, metrics, model_config, params = mobilevit_run
  print(f'MobileViT_XXS digits top-1 {metrics["accuracy"]:.4f}')
  assert metrics['step'] == 60 and metrics['examples'] == 355
  assert metrics['accuracy'] >= 0.90  # 0.955 measured (deterministic seed)
  assert model_config.name == 'MobileViT_XXS' and model_config.num_classes == 10
  # 1,272,024 less the 1000-class head plus a 10-class one.
  assert models.count_params(params) == 1_272_024 - 321_000 + 3_210
  # The train step moved BatchNorm's running statistics off their init (0, 1).
  flat = dict(param_paths.flatten_with_paths(params))
  assert np.abs(flat['stem/bn/running_mean']).max() > 1e-3
  assert np.abs(flat['final_conv/bn/running_var'] - 1).max() > 1e-3
  # Evaluating on the running statistics gives the reported accuracy.
  top1 = classification.accuracy(models.build(model_config), params,
                                 data.make_eval_iterator(config), top_k=(1,))
  assert top1['top1'] == pytest.approx(100 * metrics['accuracy'])
  del config


def test_ptq_int8_with_convolutions_keeps_top1_within_one_point(mobilevit_run):
  config, metrics, model_config, params = mobilevit_run
  qparams, qconfig = quantize.quantize(
      params, model_config, {'weight_dtype': 'int8', 'conv_dtype': 'int8'})
  quantized = [p for p, x in jax.tree_util.tree_flatten_with_path(
      qparams, is_leaf=quantize.is_quantized)[0] if quantize.is_quantized(x)]
  convs = [p for p in quantized if 'conv' in param_paths.path_str(p)]
  # Every conv (stem, 3 per inverted residual, 4 per MobileViT block, final)
  # and the 6 weight layers of each of the 9 transformer layers; the head
  # stays float.
  assert len(convs) == 1 + 3 * 7 + 4 * 3 + 1
  assert len(quantized) == len(convs) + 6 * 9
  q = classification.accuracy(quantize.quantized_model(qconfig), qparams,
                              data.make_eval_iterator(config), top_k=(1,))
  print(f'float {100 * metrics["accuracy"]:.2f} %, int8 {q["top1"]:.2f} %')
  assert abs(q['top1'] - 100 * metrics['accuracy']) <= 1.0


def test_tflite_float_export_agrees_with_jax(mobilevit_run, tmp_path):
  config, _, model_config, params = mobilevit_run
  out = export.export_tflite(model_config, params, str(tmp_path / 'f.tflite'))
  interp = tflite.interpreter(out['path'])
  forward = jax.jit(classification.forward_fn(models.build(model_config)))
  same = count = 0
  for batch in data.make_eval_iterator(config):
    real = np.asarray(batch['mask']) > 0
    images = np.asarray(batch['image'])[real]
    ours = np.asarray(forward(params, images)).argmax(-1)
    same += int(np.sum(tflite.predict(interp, images).argmax(-1) == ours))
    count += len(images)
  print(f'TFLite float agrees with JAX on {same} of {count} test images')
  assert count == 355 and same >= 0.99 * count


def _test_images(config):
  """The 355 digits test images (the eval iterator's padding dropped)."""
  return np.concatenate([np.asarray(b['image'])[np.asarray(b['mask']) > 0]
                         for b in data.make_eval_iterator(config)])


def test_onnx_float_export_agrees_with_jax(mobilevit_run):
  config, _, model_config, params = mobilevit_run
  fn = classification.forward_fn(models.build(model_config))
  images = _test_images(config)
  ours = np.asarray(jax.jit(fn)(params, images))
  blob = onnx_export.convert(fn, params, images.shape[1:])
  logits = onnx_export.predict(onnx_export.session(blob, threads=1), images)
  same = int(np.sum(logits.argmax(-1) == ours.argmax(-1)))
  error = np.abs(logits - ours).max() / np.abs(ours).max()
  print(f'ONNX float agrees with JAX on {same} of {len(images)} test images; '
        f'max |logit difference| / max |logit| {error:.2e}')
  assert len(images) == 355 and same >= 0.99 * len(images)
  assert error < 1e-4


def test_report_row_of_the_saved_model(mobilevit_run, tmp_path):
  """What the report stage does for one variant: compact artifact, score, table."""
  config, metrics, model_config, params = mobilevit_run
  artifact = str(tmp_path / '0.npz')
  compact.save(artifact, params, model_config)
  batches = list(data.make_eval_iterator(config))
  row = report.score_variant('MobileViT_XXS', classification.forward_fn(
      models.build(model_config)), params, batches, artifact=artifact,
                             batch_sizes=(1, 8), repeats=1, min_run_s=0.01)
  print({k: row[k] for k in ('top1', 'params', 'bytes', 'flops', 'img_per_s')})
  assert row['top1'] == pytest.approx(100 * metrics['accuracy'])
  assert row['params'] == models.count_params(params)
  # float32 weights and BatchNorm statistics, one file, a few KiB of index.
  assert 4 * row['params'] < row['bytes'] < 4 * row['params'] + 64 * 1024
  assert 5e6 < row['flops'] < 5e7 and row['img_per_s'] > 0  # 10.7 MFLOPs at 32 px
  paths_ = report.write_report([row], str(tmp_path / 'report'))
  table = open(paths_['md']).read()
  assert 'MobileViT_XXS' in table
