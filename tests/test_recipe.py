"""Recipes: the quickstart's stages chained in a workdir, skipped once done,
resumed after a SIGKILL, with a few training steps (tests/helpers/recipe_tiny.py)."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import recipe_tiny
from tests.helpers.train_helpers import REPO, subprocess_env
from vit_compress import checkpoint
from vit_compress import param_paths
from vit_compress import recipe
from vit_compress import stages

pytestmark = pytest.mark.slow   # integration: see pytest.ini

STAGES = ('teacher', 'student', 'shrunk', 'int8', 'report', 'export')
# What makes two reports the same model results (img/s and bytes are measured).
SAME = ('name', 'top1', 'agreement', 'loss', 'params', 'nonzero_params', 'flops')


def _config(data_dir, order=STAGES):
  config = recipe_tiny.get_config()
  config.data_dir = data_dir
  config.recipe.order = order
  return config


def _report(workdir):
  with open(os.path.join(workdir, 'report.json')) as f:
    return [{k: row.get(k) for k in SAME} for row in json.load(f)]


@pytest.fixture(scope='module')
def done(digits_data_dir, tmp_path_factory):
  """(config, workdir, DONE records) of one uninterrupted tiny recipe."""
  workdir = str(tmp_path_factory.mktemp('recipe') / 'run')
  config = _config(digits_data_dir)
  return config, workdir, recipe.run(config, workdir)


def test_each_stage_reads_the_previous_ones_output(done):
  _, workdir, markers = done
  assert sorted(markers) == sorted(STAGES)
  assert markers['student']['inputs'] == {'teacher': markers['teacher']['id']}
  rows = {r['name']: r for r in json.load(open(os.path.join(workdir, 'report.json')))}
  teacher, masked = rows['teacher'], rows['student (masked)']
  shrunk, int8 = rows['student shrunk'], rows['student shrunk int8']
  # Shrinking removes exactly the zeros that pruning left: same predictions.
  assert shrunk['top1'] == masked['top1'] and shrunk['loss'] == pytest.approx(
      masked['loss'], rel=1e-5)
  assert shrunk['params'] == masked['nonzero_params'] < masked['params']
  assert markers['shrunk']['metrics']['num_heads'] == [2, 2]     # 4 heads, half pruned
  assert markers['shrunk']['metrics']['mlp_dim'] == [128, 128]   # 256 neurons, half
  # int8 is int8 on disk: every quantized kernel is stored as int8 values.
  _, stored = checkpoint.load_model(os.path.join(workdir, 'int8', 'model'))
  flat = dict(param_paths.flatten_with_paths(stored))
  qvalues = [v for k, v in flat.items() if k.endswith('/qvalue')]
  assert len(qvalues) == 2 * 6 and all(v.dtype == np.int8 for v in qvalues)
  assert int8['params'] == shrunk['params']
  assert int8['bytes'] < shrunk['bytes'] < teacher['bytes']
  assert rows['teacher + ToMe r=2']['flops'] < teacher['flops']
  assert all(r['timing_rounds'] == 2 and r['img_per_s'] == r['img_per_s_b32'] > 0
             for r in rows.values())
  assert 'agreement' not in teacher and 0 <= masked['agreement'] <= 100
  files = sorted(os.listdir(os.path.join(workdir, 'export')))
  assert {'model.npz', 'model_float.tflite', 'model_int8.tflite'} <= set(files)
  assert {'report.json', 'report.md', 'pareto.png'} <= set(os.listdir(workdir))


def test_a_rerun_skips_every_completed_stage(done, monkeypatch):
  config, workdir, markers = done
  report_json = open(os.path.join(workdir, 'report.json')).read()
  stamps = {n: os.path.getmtime(recipe.marker_path(workdir, n)) for n in STAGES}

  def must_not_run(context):
    raise AssertionError(f'stage {context.name} ran again')
  for kind in stages.STAGES.names():
    monkeypatch.setattr(stages.STAGES.get(kind), 'run', must_not_run)
  assert recipe.run(config, workdir) == markers
  assert open(os.path.join(workdir, 'report.json')).read() == report_json
  assert {n: os.path.getmtime(recipe.marker_path(workdir, n)) for n in STAGES} == stamps


def test_a_done_stage_whose_settings_changed_is_refused(done):
  config, workdir, _ = done
  config = _config(config.data_dir)
  config.recipe.stages.student.config.total_steps += 1
  with pytest.raises(ValueError, match=r"'student'.*config\.total_steps 40 -> 41.*"
                     r'Delete .*student'):
    recipe.run(config, workdir)
  config = _config(config.data_dir)
  config.seed = 1   # shared by every stage
  with pytest.raises(ValueError, match=r"'teacher'.*another shared .*: seed 0 -> 1"):
    recipe.run(config, workdir)


def test_lowrank_stage_then_fine_tuning_then_report(done, tmp_path):
  """configs/lowrank.py's stages after the finished tiny teacher (copied, so
  the recipe skips it): factorise, fine-tune the factorised model, report."""
  from configs import lowrank as lowrank_config  # pylint: disable=g-import-not-at-top
  config, finished, markers = done
  config = _config(config.data_dir, order=('teacher', 'lowrank', 'finetune', 'report'))
  for name, stage in lowrank_config.get_config().recipe.stages.items():
    if name != 'teacher':
      config.recipe.stages[name] = stage
  stages_ = config.recipe.stages
  stages_.finetune.config.total_steps = 10
  stages_.finetune.config.schedule.warmup_steps = 2
  stages_.report.update(batch_sizes=(32,), repeats=1, min_run_s=0.0, rounds=1)
  workdir = str(tmp_path / 'lowrank')
  shutil.copytree(os.path.join(finished, 'teacher'), os.path.join(workdir, 'teacher'))
  done_now = recipe.run(config, workdir)
  assert done_now['teacher']['id'] == markers['teacher']['id']   # not retrained
  lr_config, lr_params = checkpoint.load_model(os.path.join(workdir, 'lowrank', 'model'))
  ft_config, ft_params = checkpoint.load_model(os.path.join(workdir, 'finetune', 'model'))
  # Micro_2: width 64, MLP 256; ratio 0.25 -> r = floor(0.25 * 64 * 256 / 320) = 12.
  ranks = {'mlp_rank_0': (12,) * 4, 'mlp_rank_1': (12,) * 4}
  assert lr_config.transformer.lowrank.to_dict() == ranks
  assert ft_config.transformer.lowrank.to_dict() == ranks   # its architecture
  a0 = lambda p: p['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel_a']
  assert a0(ft_params).shape == a0(lr_params).shape == (64, 12)
  assert not np.array_equal(a0(ft_params), a0(lr_params))   # it trained from them
  params_after = done_now['lowrank']['metrics']['params_after']
  rows = {r['name']: r for r in json.load(open(os.path.join(workdir, 'report.json')))}
  low, tuned = rows['low-rank 0.25'], rows['low-rank 0.25 fine-tuned']
  assert low['params'] == tuned['params'] == params_after < rows['teacher']['params']
  assert tuned['flops'] == low['flops'] < rows['teacher']['flops']
  assert rows['teacher']['top1'] == next(r for r in _report(finished)
                                         if r['name'] == 'teacher')['top1']


def test_report_of_the_teacher_in_jax_tflite_and_onnx(done, tmp_path):
  """The finished tiny teacher reported as JAX runs it and as its TFLite and
  ONNX files (float, and ONNX dynamic int8) run in their interpreters."""
  config, finished, _ = done
  config = _config(config.data_dir, order=('teacher', 'report'))
  config.recipe.stages.report.variants = [
      {'name': 'teacher', 'model': 'stage:teacher'},
      {'name': 'teacher tflite', 'model': 'stage:teacher', 'runtime': 'tflite'},
      {'name': 'teacher onnx', 'model': 'stage:teacher', 'runtime': 'onnx'},
      {'name': 'teacher onnx int8', 'model': 'stage:teacher',
       'runtime': 'onnx_int8_dynamic'},
      {'name': 'teacher tflite int8', 'model': 'stage:teacher',   # calibrated on
       'runtime': 'tflite_int8', 'num_calibration': 16}]          # < one batch of 32
  workdir = str(tmp_path / 'runtimes')
  shutil.copytree(os.path.join(finished, 'teacher'), os.path.join(workdir, 'teacher'))
  recipe.run(config, workdir)
  rows = json.load(open(os.path.join(workdir, 'report.json')))
  assert [r['runtime'] for r in rows] == ['jax', 'tflite', 'onnx', 'onnx_int8_dynamic',
                                          'tflite_int8']
  jax_row, tfl, onnx, int8, tfl_int8 = rows
  assert jax_row['top1'] == next(r for r in _report(finished)
                                 if r['name'] == 'teacher')['top1']
  for row in (tfl, onnx):   # float files: the same predictions as JAX
    assert row['top1'] == jax_row['top1'] and row['agreement'] == 100.0
    assert row['loss'] == pytest.approx(jax_row['loss'], rel=1e-4)
  assert tfl['edge_file'].endswith('_b32.tflite') and onnx['edge_file'].endswith('.onnx')
  for row in (tfl, onnx, int8, tfl_int8):
    assert row['bytes'] == os.path.getsize(os.path.join(workdir, row['edge_file']))
    assert row['img_per_s'] == row['img_per_s_b32'] > 0 and row['timing_rounds'] == 2
    assert row['params'] == jax_row['params'] and row['flops'] == jax_row['flops']
  for row, float_row in ((int8, onnx), (tfl_int8, tfl)):   # int8 on disk
    assert row['bytes'] < 0.6 * float_row['bytes'] and 0 <= row['agreement'] <= 100
    assert row['precision'] == 'int8'
  md = open(os.path.join(workdir, 'report.md')).read()
  assert '| variant | runtime |' in md and '| teacher onnx | onnx |' in md
  assert os.path.getsize(os.path.join(workdir, 'pareto.png')) > 10_000


def test_bad_recipes_fail_before_any_stage_runs(tmp_path):
  def fails(edit, match):
    config = _config('/nonexistent')
    edit(config.recipe)
    with pytest.raises(ValueError, match=match):
      recipe.run(config, str(tmp_path))
  fails(lambda r: setattr(r, 'order', ('teacher', 'studnet')),
        r"Unknown stage .*'studnet'.*Did you mean 'student'")
  fails(lambda r: setattr(r, 'order', ('student', 'teacher')),
        r"stages\.student refers to 'stage:teacher', which is not a stage before")
  fails(lambda r: r.stages.shrunk.update(kind='shrnk'),
        r"Unknown recipe stage kind 'shrnk'.*Did you mean 'shrink'")
  fails(lambda r: r.stages.int8.update(qaunt={}),
        r"config\.recipe\.stages\.int8.*'qaunt'")
  fails(lambda r: r.stages.student.config.update(total_step=5),
        r"stages\.student\.config.*'total_step'")
  fails(lambda r: r.stages.report.update(variants=[{'name': 'x'}]),
        r"variants\[0\] needs a 'name' and a 'model'")
  fails(lambda r: r.stages.report.variants[1].update(runtime='tfilte'),
        r"variants\[1\]\.runtime: unknown 'tfilte'; choose from \['jax', 'tflite', 'onnx', ")
  assert os.listdir(tmp_path) == []


# Where a run is killed: (the stage then running, the file whose appearance
# triggers SIGKILL). Each rerun goes on from what the previous one left.
KILL_POINTS = (
    ('teacher', f'teacher/checkpoints/{recipe_tiny.CHECKPOINT_EVERY}'),
    ('student', f'student/checkpoints/{recipe_tiny.CHECKPOINT_EVERY}'),
    ('report', 'int8/DONE'),                 # scoring the variants
)


def _kill_when(cmd, trigger, timeout=240):
  """Starts cmd and SIGKILLs it (no clean-up) once `trigger` exists."""
  proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not trigger.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  running = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert trigger.exists() and running, f'{cmd} ended before {trigger} appeared'


def test_sigkill_at_several_points_then_rerun_gives_the_same_report(
    done, tmp_path, caplog):
  config, reference, _ = done
  order = STAGES[:-1]   # up to the report
  workdir = tmp_path / 'killed'
  cmd = [sys.executable, '-m', 'vit_compress.main',
         f'--config={REPO}/tests/helpers/recipe_tiny.py', f'--workdir={workdir}',
         f'--config.data_dir={config.data_dir}', f'--config.recipe.order={order}']
  for stage, trigger in KILL_POINTS:
    _kill_when(cmd, workdir / trigger)
    assert not (workdir / stage / 'DONE').exists()

  with caplog.at_level(logging.INFO):
    recipe.run(_config(config.data_dir, order), str(workdir))
  for i, name in enumerate(order[:-1]):
    assert f'[{i + 1}/5] {name}: done already, skipped' in caplog.text
  assert _report(workdir) == _report(reference)
