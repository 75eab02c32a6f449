"""Predict with .tflite and .onnx files: the runtimes' labels are the eval module's.

The digits model and its test images (the `digits_run` fixture, conftest.py) and
`eval_labels` (the eval module's predictions) come from tests/helpers/predict_run.py.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.predict_run import eval_labels
from tests.helpers.train_helpers import REPO, subprocess_env
from vit_compress import artifact
from vit_compress import checkpoint
from vit_compress import edge
from vit_compress import export
from vit_compress import models
from vit_compress import predict
from vit_compress import predict_runtime
from vit_compress.evaluation import classification


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'vit_compress.predict', *args],
                        env=subprocess_env(), cwd=REPO, capture_output=True,
                        text=True, timeout=240)


@pytest.fixture(scope='module')
def tflite_file(digits_run):
  """export's TFLite file (python -m vit_compress.export --format=tflite)."""
  model_dir, _, _, root = digits_run
  config, params = checkpoint.load_model(model_dir)
  path = str(root / 'export' / 'model_float.tflite')
  export.export_tflite(config, params, path)
  return path


def _expected(model_dir, images):
  config, params = checkpoint.load_model(model_dir)
  logits = np.asarray(classification.forward_fn(models.build(config))(params, images))
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return config, eval_labels(models.build(config), params, images), (
      probs / probs.sum(-1, keepdims=True))


@pytest.mark.slow
def test_tflite_cli_labels_are_the_eval_modules(digits_run, tflite_file):
  model_dir, files, images, _ = digits_run
  _, expected, probs = _expected(model_dir, images)
  assert os.path.exists(artifact.sidecar_path(tflite_file))
  out = _cli(f'--model={tflite_file}', '--top_k=2', *files)
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith(tuple(files))]
  assert [l.split(': ')[1].split()[0] for l in lines] == expected
  top1 = [float(l.split(': ')[1].split()[1].rstrip(',')) for l in lines]
  np.testing.assert_allclose(top1, probs.max(-1), atol=1e-4)   # printed to 4 places


@pytest.mark.slow
def test_onnx_api_labels_are_the_eval_modules(digits_run, digits_data_dir):
  model_dir, files, images, root = digits_run
  config, expected, probs = _expected(model_dir, images)
  # export_optimized's ONNX file (python -m vit_compress.export --model=...).
  manifest = edge.export_optimized(model_dir, (1, 8, 8, 3), str(root / 'edge'),
                                   artifacts=['onnx_float'], data_dir=digits_data_dir,
                                   rounds=1, min_run_s=0.0, threads=1,
                                   num_calibration=8)
  p = predict.load(manifest['artifacts']['onnx_float']['path'])
  assert isinstance(p, predict_runtime.RuntimePredictor)
  assert p.class_names == tuple(config.inference.class_names)
  np.testing.assert_array_equal(p.preprocess(files), images)
  top = p(files, top_k=1)
  assert [t[0][0] for t in top] == expected
  np.testing.assert_allclose([t[0][1] for t in top], probs.max(-1), rtol=1e-4)
  with pytest.raises(ValueError, match='logits only'):
    p.embed(files)


def test_runtime_file_without_its_config_gets_a_clear_message(digits_run, tflite_file):
  model_dir, files, images, root = digits_run
  config, expected, _ = _expected(model_dir, images)
  os.makedirs(root / 'plain', exist_ok=True)
  path = str(root / 'plain' / 'model.tflite')   # as a file exported earlier
  shutil.copy(tflite_file, path)
  with pytest.raises(ValueError, match=r'no model.model_config.json beside it.*'
                     r"--pp='.*--class_names="):
    predict.load(path)
  # Given both, it runs; the names are the ones given.
  names = [f'd{i}' for i in range(10)]
  p = predict.load(path, pp=config.inference.pp_eval, class_names=names)
  want = [f'd{config.inference.class_names.index(n)}' for n in expected]
  assert [t[0][0] for t in p(files, top_k=1)] == want
