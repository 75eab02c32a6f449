"""The training loop: accuracy, resume, accumulation, logging, NaN handling."""
import logging
import os
import re
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_compress import checkpoint
from vit_compress import losses
from vit_compress import models
from vit_compress import optim
from vit_compress import train
from tests.helpers.train_helpers import digits_config, main_command, run_main, subprocess_env, REPO

pytestmark = pytest.mark.slow   # integration: see pytest.ini


def _params(workdir):
  _, params = checkpoint.load_model(os.path.join(workdir, 'model'))
  return params


def test_tiny_vit_reaches_95_percent_on_digits(digits_data_dir, tmp_path):
  # configs/augreg.py's digits setup; Micro_2 at 8 px, 400 Adam steps.
  config = digits_config(digits_data_dir, 'Micro_2', total_steps=400,
                         checkpoint_every=400, log_every=100,
                         **{'schedule.base_lr': 0.003,
                            'schedule.warmup_steps': 50})
  start = time.time()
  metrics = train.train_and_evaluate(config, str(tmp_path))
  print(f'digits top-1 {metrics["accuracy"]:.4f} in {time.time() - start:.0f}s')
  assert metrics['step'] == 400
  assert metrics['examples'] == 355  # the whole test split, counted once
  assert metrics['accuracy'] >= 0.95
  # The trained model is saved with its config and reloads on its own.
  model_config, params = checkpoint.load_model(str(tmp_path / 'model'))
  assert model_config.name == 'Micro_2' and model_config.num_classes == 10
  assert models.count_params(params) == models.count_params(
      models.param_shapes(model_config))


@pytest.fixture(scope='module')
def straight_30(digits_data_dir, tmp_path_factory):
  """A workdir after 30 uninterrupted steps (checkpoints 20 and 30 kept)."""
  workdir = tmp_path_factory.mktemp('straight_30')
  train.train_and_evaluate(digits_config(digits_data_dir, total_steps=30),
                           str(workdir))
  return workdir


def test_killed_run_resumes_to_identical_parameters(digits_data_dir, tmp_path,
                                                    straight_30):
  # SIGKILL once the step-10 checkpoint is on disk (no chance to clean up).
  steps = ['--config.total_steps=30', '--config.checkpoint_every=10']
  workdir = tmp_path / 'killed'
  cmd = main_command(workdir, digits_data_dir, *steps, '--config.log_every=1')
  proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not os.path.isdir(workdir / 'checkpoints' / '10') and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / 'model').exists()  # it really was interrupted
  run_main(workdir, digits_data_dir, *steps)
  # The same as 30 uninterrupted steps (in-process: the CLI trains the same).
  jax.tree.map(np.testing.assert_array_equal, _params(straight_30),
               _params(workdir))


def _one_step_params(config, batch):
  module = models.build(config.model)
  tx, schedule = optim.make_optimizer(config)
  example = jax.tree.map(lambda x: x[:1], batch)
  state = train.make_init_fn(config, module, None, tx, tx, example)(jax.random.key(0))
  step = jax.jit(train.make_train_step(config, module, None, tx, tx, schedule))
  state, metrics = step(state, batch, {})
  return state['params'], metrics


def test_accumulated_gradients_equal_the_big_batch(digits_data_dir):
  config = train.prepare(digits_config(digits_data_dir, batch_size=32))
  config.model.num_classes = 10
  config.optim.grad_clip_norm = None  # clipping acts on the combined gradient anyway
  config.schedule.warmup_steps = 0    # a warm-up would make step 0's update zero
  config.optim.name = 'sgd'  # its update is proportional to the gradient (Adam's is ~sign)
  config.schedule.base_lr = 0.5
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 32)
  batch = {'image': jnp.asarray(rng.normal(size=(32, 8, 8, 3)), jnp.float32),
           'label': jnp.asarray(labels),
           'labels': jax.nn.one_hot(labels, 10)}
  big, big_metrics = _one_step_params(config, batch)
  config.optim.accum_steps = 4
  accumulated, acc_metrics = _one_step_params(config, batch)
  np.testing.assert_allclose(acc_metrics['loss'], big_metrics['loss'], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               big, accumulated)
  # ... and it is a real update: the zero-initialised head has moved.
  assert np.abs(big['head']['kernel']).max() > 1e-2


def test_tensorboard_events_hold_the_logged_scalars(digits_data_dir, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  train.train_and_evaluate(digits_config(digits_data_dir), str(tmp_path))
  events = event_accumulator.EventAccumulator(str(tmp_path)).Reload()
  tags = events.Tags()['tensors'] + events.Tags()['scalars']
  for tag in ('train/loss', 'train/learning_rate', 'train/grad_norm',
              'train/img_per_s', 'eval/accuracy'):
    assert tag in tags, tags
  logged = [e.step for e in (events.Tensors('train/loss')
                             if 'train/loss' in events.Tags()['tensors']
                             else events.Scalars('train/loss'))]
  assert logged == [10, 20]


@pytest.fixture
def nan_loss():
  name = 'test_nan'
  if name not in losses.LOSSES:
    losses.LOSSES.register(name)(
        lambda student, batch, **kw: (jnp.nan * jnp.sum(student['logits']), {}))
  return name


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    digits_data_dir, tmp_path, nan_loss):
  train.train_and_evaluate(digits_config(digits_data_dir), str(tmp_path))
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  # Another loss is another run: resuming under it is opted into.
  config = digits_config(digits_data_dir, total_steps=40, loss=nan_loss,
                         resume_with_changes=True)
  with pytest.raises(FloatingPointError, match='loss is nan at step 21.*step 20'):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before == ['10', '20']


def test_corrupted_latest_checkpoint_resumes_from_the_previous_one(
    digits_data_dir, tmp_path, straight_30, caplog):
  # The straight run as if it had stopped just after saving step 30, ...
  workdir = tmp_path / 'run'
  shutil.copytree(straight_30, workdir)
  shutil.rmtree(workdir / 'model')
  # ... with garbage over every file of that last train state (a disk error,
  # a copy cut short): it cannot be read back.
  files = [p for p in (workdir / 'checkpoints' / '30' / 'state').rglob('*')
           if p.is_file()]
  assert files
  for path in files:
    path.write_bytes(b'\x00garbage' * 7)

  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(
        digits_config(digits_data_dir, total_steps=30), str(workdir))
  assert re.search(r'Checkpoint at step 30 is unreadable.*moved to '
                   r'.*unreadable_checkpoints/30, trying the previous', caplog.text)
  assert resumed['step'] == 30
  assert (workdir / 'unreadable_checkpoints' / '30' / 'state').is_dir()
  # Steps 21..30 re-run from step 20: the same parameters as never failing.
  jax.tree.map(np.testing.assert_array_equal, _params(straight_30),
               _params(workdir))


def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes_identically(
    digits_data_dir, tmp_path, straight_30):
  import threading  # pylint: disable=g-import-not-at-top
  config = lambda: digits_config(digits_data_dir, total_steps=30, log_every=1)
  workdir = tmp_path / 'preempted'

  def preempt_after_first_checkpoint():
    while not (workdir / 'checkpoints' / '10').is_dir():
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # what a preempted VM receives

  threading.Thread(target=preempt_after_first_checkpoint, daemon=True).start()
  stopped = train.train_and_evaluate(config(), str(workdir))
  assert 10 < stopped['step'] < 30           # stopped early ...
  saved = sorted(int(s) for s in os.listdir(workdir / 'checkpoints'))
  assert saved[-1] == stopped['step']        # ... with a checkpoint where it stopped
  assert not (workdir / 'model').exists()

  resumed = train.train_and_evaluate(config(), str(workdir))
  assert resumed['step'] == 30
  jax.tree.map(np.testing.assert_array_equal, _params(straight_30),
               _params(workdir))
