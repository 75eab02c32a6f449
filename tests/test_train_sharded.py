"""The same 3 training steps on every topology give the same loss and weights.

One device (in this process) is the reference; 8 forced CPU devices with data
parallelism, 8 with data x model (tensor) parallelism, and 2 processes joined
by jax.distributed over gloo (parameters sharded across them, FSDP-style) run
in subprocesses, so that neither XLA_FLAGS nor jax.distributed leaks into the
test session. The training pp string augments (random crops, flips): the
global batch, augmentation included, must not depend on the topology.
"""
import json
import os

import jax
import numpy as np
import pytest

from tests.helpers.processes import free_port, results, start_python
from tests.helpers.train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import models
from vit_compress import param_paths
from vit_compress import train

pytestmark = pytest.mark.slow   # integration: see pytest.ini

PP_AUGMENT = ('decode|inception_crop(8)|flip_lr|to_rgb|value_range(-1, 1)|'
              'onehot')
# Adam (digits setup), 3 steps, one checkpoint and one evaluation at the end.
STEPS = {'total_steps': 3, 'log_every': 100, 'eval_every': 100,
         'checkpoint_every': 100, 'schedule.warmup_steps': 2,
         'pp_train': PP_AUGMENT}
EIGHT_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
TOLERANCE = 1e-5

RUNNER = r'''
import json, os, sys
import jax
from tests.helpers.processes import free_port, results, start_python
from tests.helpers.train_helpers import digits_config
from vit_compress import models, sharding, train
workdir, data_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if 'mesh' in overrides:
  overrides['mesh'] = tuple(tuple(axis) for axis in overrides['mesh'])
config = digits_config(data_dir, **overrides)
metrics = train.train_and_evaluate(config, workdir)
specs = sharding.param_specs(models.param_shapes(config.model),
                             sharding.make_mesh(config.mesh),
                             config.sharding_rules)
print('RESULT ' + json.dumps({
    'metrics': metrics, 'devices': jax.device_count(),
    'processes': jax.process_count(),
    'mlp_spec': list(specs['Transformer']['encoderblock_0']['MlpBlock_0'][
        'Dense_0']['kernel'])}), flush=True)
if jax.process_count() > 1:
  jax.distributed.shutdown()
os._exit(0)   # skip TensorFlow's slow interpreter teardown
'''


def _start(workdir, data_dir, overrides, env=None):
  return start_python(RUNNER, workdir, data_dir, json.dumps(dict(STEPS, **overrides)),
                      env=env)


def _saved(workdir):
  """(extra, {path: array}) of the model the run saved at its end."""
  _, params, extra = checkpoint.load_model(os.path.join(workdir, 'model'),
                                           with_extra=True)
  return extra, dict(param_paths.flatten_with_paths(params))


@pytest.fixture(scope='module')
def reference(digits_data_dir, tmp_path_factory):
  """3 steps on this process's single device."""
  workdir = str(tmp_path_factory.mktemp('one_device'))
  metrics = train.train_and_evaluate(
      digits_config(digits_data_dir, **STEPS), workdir)
  return metrics, _saved(workdir)


def _assert_same_run(metrics, workdir, reference):
  ref_metrics, (ref_extra, ref_params) = reference
  extra, params = _saved(workdir)
  assert metrics['step'] == ref_metrics['step'] == 3
  assert extra['steps'] == 3 and extra['eval']['examples'] == 355
  np.testing.assert_allclose(metrics['train_loss'], ref_metrics['train_loss'],
                             rtol=TOLERANCE, atol=TOLERANCE)
  for key in ('loss', 'accuracy'):   # the whole test split, after 3 steps
    np.testing.assert_allclose(metrics[key], ref_metrics[key],
                               rtol=TOLERANCE, atol=TOLERANCE)
  assert sorted(params) == sorted(ref_params)
  for path, value in ref_params.items():
    np.testing.assert_allclose(params[path], value, rtol=TOLERANCE,
                               atol=TOLERANCE, err_msg=path)


def test_reference_run_trains(digits_data_dir, reference):
  metrics, (extra, params) = reference
  assert np.isfinite(metrics['train_loss']) and metrics['train_loss'] > 1.0
  assert extra['eval']['examples'] == 355
  # The 3 steps move the weights far more than the tolerance, so agreeing to
  # it says something (the trainer initialises from split(key(seed))[0]).
  config = train.prepare(digits_config(digits_data_dir, **STEPS))
  config.model.num_classes = 10
  initial = dict(param_paths.flatten_with_paths(models.init(
      config.model, jax.random.split(jax.random.key(config.seed))[0])))
  assert sorted(initial) == sorted(params)
  moved = max(np.abs(params[p] - initial[p]).max() for p in params)
  assert moved > 100 * TOLERANCE


def test_8_devices_data_parallel(digits_data_dir, tmp_path, reference):
  out, = results([_start(tmp_path, digits_data_dir,
                          {'mesh': [['data', 8]]}, env=EIGHT_DEVICES)])
  assert out['devices'] == 8 and out['mlp_spec'] == []
  _assert_same_run(out['metrics'], str(tmp_path), reference)


def test_8_devices_data_and_tensor_parallel(digits_data_dir, tmp_path,
                                            reference):
  out, = results([_start(
      tmp_path, digits_data_dir,
      {'mesh': [['data', 4], ['model', 2]], 'sharding_rules': 'tensor_parallel'},
      env=EIGHT_DEVICES)])
  assert out['devices'] == 8
  assert out['mlp_spec'] == [None, 'model']   # MLP 128 / 2
  _assert_same_run(out['metrics'], str(tmp_path), reference)


def test_2_processes_over_gloo(digits_data_dir, tmp_path, reference):
  address = f'127.0.0.1:{free_port()}'
  procs = [_start(tmp_path, digits_data_dir, {
      'distributed.enabled': True, 'distributed.coordinator_address': address,
      'distributed.num_processes': 2, 'distributed.process_id': rank,
      'sharding_rules': 'fsdp'}) for rank in (0, 1)]
  outs = results(procs)
  for out in outs:
    assert out['devices'] == 2 and out['processes'] == 2
    # FSDP: the weights are split between the two processes.
    assert out['mlp_spec'] == [None, 'data']
    _assert_same_run(out['metrics'], str(tmp_path), reference)
