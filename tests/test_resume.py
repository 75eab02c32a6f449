"""Rerunning a workdir never loses the run: a changed config is refused (files
untouched) unless opted in; a structure mismatch is never taken for
corruption; one run holds a workdir at a time; an error during a save keeps
the newest complete checkpoint."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers.train_helpers import digits_config, main_command, snapshot, subprocess_env, REPO
from vit_compress import checkpoint
from vit_compress import main
from vit_compress import train
from vit_compress import workdir as workdir_lib

pytestmark = pytest.mark.slow   # integration: see pytest.ini


@pytest.fixture(scope='module')
def run20(digits_data_dir, tmp_path_factory):
  """A finished 20-step run (checkpoints at 10 and 20); tests copy it."""
  workdir = str(tmp_path_factory.mktemp('resume') / 'run')
  train.train_and_evaluate(digits_config(digits_data_dir), workdir)
  return workdir


def _copy(run20, tmp_path):
  target = str(tmp_path / 'run')
  shutil.copytree(run20, target)
  return target


def _saved_steps(monkeypatch):
  steps = []
  original = workdir_lib.save

  def save(manager, step, *args, **kwargs):
    steps.append(step)
    return original(manager, step, *args, **kwargs)
  monkeypatch.setattr(workdir_lib, 'save', save)
  return steps


def test_changed_optimiser_is_refused_then_continues_with_the_opt_in(
    run20, digits_data_dir, tmp_path, capsys, monkeypatch):
  workdir = _copy(run20, tmp_path)
  config = digits_config(digits_data_dir, total_steps=30, **{'optim.name': 'sgd'})
  before = snapshot(workdir)
  capsys.readouterr()
  assert main.run(config, workdir) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert re.search(r"optim\.name: 'adamw' -> 'sgd'.*Nothing was written.*"
                   r'total_steps.*new --workdir.*--resume_with_changes', err), err
  assert 'total_steps:' not in err   # a safe key is not reported as a change
  assert snapshot(workdir) == before

  steps = _saved_steps(monkeypatch)
  assert main.run(config, workdir, resume_with_changes=True) == 0
  assert steps == [30]   # continued from step 20: no step before it was redone
  with open(os.path.join(workdir, 'experiment_config.step_20.json')) as f:
    assert json.load(f)['optim']['name'] == 'adamw'   # the config it replaced
  with open(os.path.join(workdir, workdir_lib.EXPERIMENT_FILE)) as f:
    assert json.load(f)['optim']['name'] == 'sgd'
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))
  # The params came from step 20, not from a fresh start: 10 more steps of
  # sgd moved them less than the distance from initialisation.
  _, start = checkpoint.load_model(os.path.join(run20, 'model'))
  _, end = checkpoint.load_model(os.path.join(workdir, 'model'))
  fresh = jax.device_get(train.models.init(
      checkpoint.load_model(os.path.join(run20, 'model'))[0], jax.random.key(0)))
  moved = sum(float(np.abs(a - b).sum()) for a, b in zip(
      jax.tree.leaves(start), jax.tree.leaves(end)))
  from_init = sum(float(np.abs(a - b).sum()) for a, b in zip(
      jax.tree.leaves(fresh), jax.tree.leaves(end)))
  assert 0 < moved < from_init


def test_safe_keys_resume_and_other_keys_are_named(run20, digits_data_dir,
                                                   tmp_path, capsys, monkeypatch):
  workdir = _copy(run20, tmp_path)
  config = digits_config(digits_data_dir, total_steps=30, log_every=5,
                         keep_checkpoints=3, eval_every=15)
  steps = _saved_steps(monkeypatch)
  assert main.run(config, workdir) == 0
  assert steps == [30]
  for edits, named in (({'optim.grad_clip_norm': 0.5}, 'optim.grad_clip_norm: '),
                       ({'optim.weight_decay': 0.123}, 'optim.weight_decay: '),
                       ({'prune.method': 'magnitude'}, "prune.method: 'none' -> 'magnitude'"),
                       ({'seed': 3}, 'seed: 0 -> 3')):
    before = snapshot(workdir)
    capsys.readouterr()
    assert main.run(digits_config(digits_data_dir, total_steps=40, **edits),
                    workdir) == 2
    err = capsys.readouterr().err
    assert named in err and err.count('\n') == 1, err
    assert repr(list(edits.values())[0]) in err, err
    assert snapshot(workdir) == before


def test_another_state_structure_is_not_set_aside(run20, digits_data_dir, tmp_path,
                                                  capsys):
  """A workdir from before configs were recorded: the checkpoints' structure
  (another optimiser's state) is an error, and nothing is moved."""
  workdir = _copy(run20, tmp_path)
  os.remove(os.path.join(workdir, workdir_lib.EXPERIMENT_FILE))
  before = snapshot(workdir)
  config = digits_config(digits_data_dir, total_steps=30, **{'optim.name': 'sgd'})
  capsys.readouterr()
  assert main.run(config, workdir) == 2
  err = capsys.readouterr().err
  assert re.search(r'step 20 .*another train state.*left as it is', err), err
  assert snapshot(workdir) == before


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_an_error_during_an_async_save_keeps_a_complete_checkpoint(
    digits_data_dir, tmp_path, monkeypatch, error):
  workdir = str(tmp_path / 'run')
  original = workdir_lib.save

  def save_then_fail(manager, step, *args, **kwargs):
    saved = original(manager, step, *args, **kwargs)
    if step == 20:   # while the step-20 save is in flight
      raise error('interrupted')
    return saved
  monkeypatch.setattr(workdir_lib, 'save', save_then_fail)
  with pytest.raises(error):
    train.train_and_evaluate(digits_config(digits_data_dir), workdir)
  monkeypatch.setattr(workdir_lib, 'save', original)
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not [n for n in names if 'tmp' in n], names   # nothing half-written
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  assert sorted(int(n) for n in names) == [10, 20]
  # The rerun restores step 20 (complete), evaluates and saves the model.
  steps = _saved_steps(monkeypatch)
  metrics = train.train_and_evaluate(digits_config(digits_data_dir), workdir)
  assert metrics['step'] == 20 and steps == []
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))


def test_second_run_is_refused_and_the_first_is_unchanged(digits_data_dir, tmp_path,
                                                          capsys):
  config = digits_config(digits_data_dir)   # the same program: compiled once
  workdir = str(tmp_path / 'shared')
  flags = ['--config.total_steps=20', '--config.log_every=10',
           '--config.eval_every=10000', '--config.checkpoint_every=10']
  first = subprocess.Popen(main_command(workdir, digits_data_dir, *flags),
                           env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
    deadline = time.time() + 120
    while not os.path.exists(lock) and first.poll() is None:
      assert time.time() < deadline
      time.sleep(0.05)
    capsys.readouterr()
    start = time.time()
    assert main.run(config, workdir) == 2
    refused_in = time.time() - start
    err = capsys.readouterr().err
    assert re.search(rf'is in use by process {first.pid} on .*another --workdir', err), err
    assert refused_in < 10, refused_in
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
      first.communicate()
  assert not os.path.exists(lock)
  alone = str(tmp_path / 'alone')
  train.train_and_evaluate(config, alone)
  _, shared_params = checkpoint.load_model(os.path.join(workdir, 'model'))
  _, alone_params = checkpoint.load_model(os.path.join(alone, 'model'))
  for a, b in zip(jax.tree.leaves(shared_params), jax.tree.leaves(alone_params)):
    np.testing.assert_array_equal(a, b)


def test_stale_lock_of_a_dead_process_is_taken_over(run20, digits_data_dir, tmp_path,
                                                    caplog):
  workdir = _copy(run20, tmp_path)
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE), 'w') as f:
    json.dump({'pid': pid, 'host': os.uname().nodename, 'since': 'earlier'}, f)
  with caplog.at_level('WARNING'):
    assert main.run(digits_config(digits_data_dir), workdir) == 0
  assert f'left by process {pid}' in caplog.text
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))


def test_a_corrupt_image_mid_run_is_named_and_the_checkpoint_kept(tmp_path, capsys):
  import tensorflow as tf
  rng = np.random.default_rng(0)
  root = tmp_path / 'images'
  for split, count in (('train', 20), ('test', 4)):
    for c in ('a', 'b'):
      (root / split / c).mkdir(parents=True)
      for i in range(count):
        image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        (root / split / c / f'{i}.png').write_bytes(tf.io.encode_png(image).numpy())
  config = digits_config(None, total_steps=10, batch_size=8, checkpoint_every=5,
                         dataset=f'folder:{root}',
                         pp_train='decode|resize(8)|value_range(-1, 1)|onehot',
                         pp_eval='decode|resize(8)|value_range(-1, 1)|onehot')
  workdir = str(tmp_path / 'run')
  assert main.run(config, workdir) == 0
  bad = root / 'train' / 'b' / '7.png'
  bad.write_bytes(bad.read_bytes()[:40])   # a valid header, truncated data
  capsys.readouterr()
  config.total_steps = 20
  assert main.run(config, workdir) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'Traceback' not in err, err
  assert re.search(r'failed at step 1[1-5] .*do not decode: .*train/b/7\.png.*'
                   r'last checkpoint \(step 10\) is kept', err), err
  manager = workdir_lib.make_manager(workdir)
  assert manager.latest_step() == 10
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))
