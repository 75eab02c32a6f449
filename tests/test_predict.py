"""Predict with an artifact: the CLI's labels are the eval module's predictions."""
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.predict_run import N, eval_labels
from tests.helpers.train_helpers import REPO, digits_config, subprocess_env
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import evaluation
from vit_compress import export
from vit_compress import models
from vit_compress import predict
from vit_compress import stages
from vit_compress import train
from vit_compress import zoo
from vit_compress.compress import quantize

pytestmark = pytest.mark.slow   # integration: see pytest.ini

def test_cli_labels_are_the_eval_modules_predictions(digits_run):
  model_dir, files, images, root = digits_run
  module, params, config = stages.load_artifact(model_dir)
  assert config.inference.pp_eval == 'decode|to_rgb|value_range(-1, 1)|onehot'
  p = predict.load(model_dir)
  # The artifact's own pp string turns the files into the eval pipeline's inputs.
  np.testing.assert_array_equal(p.preprocess(files), images)
  expected = eval_labels(module, params, images)
  out = subprocess.run(
      [sys.executable, '-m', 'vit_compress.predict', f'--model={model_dir}',
       '--top_k=3', f'--embeddings_out={root / "emb.npy"}', *files],
      env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
      timeout=240, check=True).stdout
  lines = [l for l in out.splitlines() if l.startswith(tuple(files))]
  assert [l.split(': ')[1].split()[0] for l in lines] == expected
  probs = [float(l.split(': ')[1].split()[1].rstrip(',')) for l in lines]
  assert all(1 / 10 <= q <= 1 for q in probs)
  embeddings = np.load(root / 'emb.npy', allow_pickle=False)
  assert embeddings.shape == (N, config.hidden_size)
  np.testing.assert_allclose(embeddings, p.embed(files), rtol=1e-5, atol=1e-6)


def test_quantized_and_npz_artifacts_predict_like_their_modules(digits_run):
  model_dir, files, images, root = digits_run
  config, params = checkpoint.load_model(model_dir)
  qparams, qconfig = quantize.quantize(params, config,
                                       {'mode': 'ptq', 'weight_dtype': 'int8'})
  quantize.save_quantized(str(root / 'int8'), qparams, qconfig, overwrite=True)
  module, loaded, _ = stages.load_artifact(str(root / 'int8'))
  top1 = [t[0][0] for t in predict.load(str(root / 'int8'))(files, top_k=1)]
  assert top1 == eval_labels(module, loaded, images)
  # Our .npz export keeps the config (with pp and names) beside the file.
  export.export_npz(config, params, str(root / 'model.npz'))
  top1 = [t[0][0] for t in predict.load(str(root / 'model.npz'))(files, top_k=1)]
  assert top1 == eval_labels(models.build(config), params, images)


def test_artifact_without_preprocessing_gets_a_clear_message(tmp_path):
  config = zoo.get('Nano_2')
  checkpoint.save_model(str(tmp_path / 'old'),
                        jax.device_get(models.init(config, jax.random.key(0))), config)
  with pytest.raises(ValueError, match='saved without its eval preprocessing and '
                     'class names.*--pp=.*--class_names='):
    predict.load(str(tmp_path / 'old'))
  p = predict.load(str(tmp_path / 'old'), pp='decode|to_rgb|value_range(-1, 1)',
                   class_names=[str(i) for i in range(10)])
  assert len(p(np.zeros((1, 8, 8, 1), np.uint8), top_k=10)[0]) == 10


def test_lit_zero_shot_over_given_classes(tmp_path):
  config = zoo.get('LiT_Nano')
  params = jax.device_get(models.init(config, jax.random.key(0)))
  checkpoint.save_model(str(tmp_path / 'lit'), params, config)
  p = predict.load(str(tmp_path / 'lit'), pp='decode|to_rgb|value_range(-1, 1)')
  images = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 1)).astype(np.uint8)
  classes = ['cat', 'dog', 'seven']
  out = p.zero_shot(images, classes, top_k=3, templates=('a photo of a {}.',))
  assert [sorted(n for n, _ in row) for row in out] == [sorted(classes)] * 3
  np.testing.assert_allclose([sum(q for _, q in row) for row in out], 1, rtol=1e-5)
  assert p.embed(images).shape == (3, 32)
  with pytest.raises(ValueError, match='zero_shot'):
    p(images)


def test_compact_artifact_keeps_preprocessing_and_names(digits_run):
  """export's artifact (shrunk, then int8) still predicts from its own record."""
  model_dir, files, images, root = digits_run
  config, params = checkpoint.load_model(model_dir)
  export.export_artifact(config, params, str(root / 'compact'))
  module, loaded, compact_config = stages.load_artifact(str(root / 'compact'))
  assert compact_config.inference.class_names[:2] == ('zero', 'one')
  top1 = [t[0][0] for t in predict.load(str(root / 'compact'))(files, top_k=1)]
  assert top1 == eval_labels(module, loaded, images)


def test_plain_vit_jax_npz_with_model_name(digits_run):
  """A bare .npz records nothing: vit_jax's eval pp at the model's size and
  numbered classes; the classes come from the file's head."""
  model_dir, files, images, root = digits_run
  config, params = checkpoint.load_model(model_dir)
  checkpoint.export_npz(str(root / 'bare.npz'), params)   # no sidecar config
  with pytest.raises(ValueError, match='give --model_name'):
    predict.load(str(root / 'bare.npz'))
  p = predict.load(str(root / 'bare.npz'), model_name='Nano_2', image_size=8)
  assert p.model_config.num_classes == 10
  assert p.pp == 'decode|resize(8)|to_rgb|value_range(-1, 1)'
  names = data.get_dataset_info('digits').class_names
  expected = [f'class {names.index(n)}' for n in
              eval_labels(models.build(config), params, images)]
  assert [t[0][0] for t in p(files, top_k=1)] == expected
