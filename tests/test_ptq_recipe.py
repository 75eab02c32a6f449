"""configs/ptq.py: the B/16 recipe plans without touching its data; the digits
variant quantizes a trained model four ways; the import stage reads an .npz."""
import json
import os

import pytest

from configs import ptq
from vit_compress import checkpoint
from vit_compress import recipe

pytestmark = pytest.mark.slow   # integration: see pytest.ini


def test_b16_recipe_is_planned_and_checked_without_any_io(tmp_path):
  planned = recipe.plan(ptq.get_config('B_16'), str(tmp_path))
  kinds = {s.name: s.kind for s in planned}
  assert kinds == {'float': 'import', 'w8': 'quantize', 'w8a8_dyn': 'quantize',
                   'w8a8_max': 'quantize', 'w8a8_pct': 'quantize',
                   'report': 'report'}
  imported = planned[0].settings
  assert imported.checkpoint.startswith('gs://vit_models/augreg/B_16-i21k-300ep')
  assert imported.checkpoint.endswith('imagenet2012-steps_20k-lr_0.03-res_384.npz')
  assert (imported.model, imported.num_classes) == ('B_16', 1000)
  assert planned[-1].settings.variants[0]['model'] == os.path.join(
      str(tmp_path), 'float', 'model')
  assert os.listdir(tmp_path) == []


def test_import_stage_refuses_a_missing_head_size(tmp_path):
  config = ptq.get_config('B_16')
  config.recipe.stages.float.num_classes = None
  with pytest.raises(ValueError, match=r'stages\.float\.num_classes=None.*1000'):
    recipe.plan(config, str(tmp_path))


def _digits_config(data_dir, order=None):
  config = ptq.get_config('Micro_2,digits')
  config.data_dir = data_dir
  config.recipe.stages.float.config.total_steps = 100
  config.recipe.stages.report.update(batch_sizes=(64,), repeats=1, rounds=1,
                                     min_run_s=0.0)
  if order:
    config.recipe.order = order
  return config


def test_digits_ptq_then_import_of_the_exported_float_model(digits_data_dir,
                                                            tmp_path):
  workdir = tmp_path / 'ptq'
  recipe.run(_digits_config(digits_data_dir), str(workdir))
  rows = {r['name']: r for r in json.load(open(workdir / 'report.json'))}
  assert list(rows) == ['float'] + [label for _, label, _ in ptq.QUANTIZED]
  float_row = rows['float']
  assert float_row['top1'] > 60   # 100 steps on digits; chance is 10 %
  for _, label, _ in ptq.QUANTIZED:
    row = rows[label]
    assert abs(row['top1'] - float_row['top1']) <= 2.0, (label, row['top1'])
    assert row['agreement'] >= 95
    assert row['bytes'] < float_row['bytes'] / 2   # int8 kernels on disk
    # Static activation scales are stored beside the weights: a few more.
    assert float_row['params'] <= row['params'] < 1.01 * float_row['params']

  # The float model as a vit_jax .npz, imported by a recipe of its own: the
  # same accuracy on the same split.
  model_config, params = checkpoint.load_model(str(workdir / 'float' / 'model'))
  npz = str(tmp_path / 'float.npz')
  checkpoint.export_npz(npz, params)
  config = _digits_config(digits_data_dir, order=('float', 'report'))
  config.recipe.stages.float = {'kind': 'import', 'checkpoint': npz,
                                'model': 'Micro_2', 'num_classes': 10}
  config.recipe.stages.report.variants = [{'name': 'imported',
                                           'model': 'stage:float'}]
  other = tmp_path / 'imported'
  recipe.run(config, str(other))
  imported = json.load(open(other / 'report.json'))[0]
  assert imported['top1'] == float_row['top1']
  assert imported['loss'] == pytest.approx(float_row['loss'], rel=1e-5)
  assert model_config.name == 'Micro_2'
