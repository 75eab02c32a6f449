"""Tests for vit_compress.sharding.

Specs are checked on an AbstractMesh (no devices needed); real sharded
computation runs in a subprocess with 8 forced CPU devices, because the
device count is fixed when jax starts and this test process has one.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
from jax.sharding import AbstractMesh, PartitionSpec as P
import ml_collections
import pytest

from vit_compress import models
from vit_compress import optim
from vit_compress import param_paths
from vit_compress import sharding
from vit_compress import zoo
from vit_compress.config_sections import complete_section
from vit_compress.config_sections import complete_sections

REPO = pathlib.Path(__file__).resolve().parents[1]
BLOCK = 'Transformer/encoderblock_0/'
ATTN = BLOCK + 'MultiHeadDotProductAttention_0/'
MLP = BLOCK + 'MlpBlock_0/'


def _specs(rules, sizes=(4, 2), names=('data', 'model'), model='Nano_2'):
  shapes = models.param_shapes(zoo.get(model))
  return dict(param_paths.flatten_with_paths(
      sharding.param_specs(shapes, AbstractMesh(sizes, names), rules)))


def _run_with_devices(script: str, num_devices: int = 8, timeout: int = 240):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-c', script], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


# ------------------------------------------------------------------ mesh (1 device)

def test_make_mesh_single_device():
  mesh = sharding.make_mesh([('data', -1)])
  assert dict(mesh.shape) == {'data': 1}
  mesh = sharding.make_mesh([('data', 1), ('model', 1)])
  assert mesh.axis_names == ('data', 'model')
  assert sharding.batch_sharding(mesh).spec == P(('data',))
  assert sharding.replicated(mesh).spec == P()


@pytest.mark.parametrize('mesh_config, message', [
    ([('data', 2)], 'needs 2 devices but there are 1'),
    ([('data', -1), ('model', -1)], 'at most one -1'),
    ([('data', 1), ('data', 1)], 'repeats an axis'),
    ([], 'empty'),
    ([('data',)], 'pairs'),
])
def test_make_mesh_errors(mesh_config, message):
  with pytest.raises(ValueError, match=message) as e:
    sharding.make_mesh(mesh_config)
  if 'needs' in message:
    assert 'Devices available: 1 (cpu' in str(e.value)


def test_batch_axes_are_all_but_model():
  mesh = AbstractMesh((2, 2, 2), ('replica', 'data', 'model'))
  assert sharding.data_axes(mesh) == ('replica', 'data')
  sharding.check_batch_size(8, mesh)
  with pytest.raises(ValueError, match='batch_size=6 is not divisible by the 4'):
    sharding.check_batch_size(6, mesh)


# ------------------------------------------------------------------ rules

def test_replicated_preset():
  specs = _specs('replicated')
  assert set(specs.values()) == {P()}
  assert len(specs) == len(param_paths.path_names(models.param_shapes(zoo.get('Nano_2'))))


def test_tensor_parallel_specs_on_nano():
  specs = _specs('tensor_parallel')
  for name in ('query', 'key', 'value'):
    assert specs[ATTN + f'{name}/kernel'] == P(None, 'model')  # (D, H, Dh) over heads
    assert specs[ATTN + f'{name}/bias'] == P('model')          # (H, Dh)
  assert specs[ATTN + 'out/kernel'] == P('model')               # (H, Dh, D)
  assert specs[ATTN + 'out/bias'] == P()
  assert specs[MLP + 'Dense_0/kernel'] == P(None, 'model')      # (D, M) over M
  assert specs[MLP + 'Dense_0/bias'] == P('model')
  assert specs[MLP + 'Dense_1/kernel'] == P('model')            # (M, D) over M
  assert specs[MLP + 'Dense_1/bias'] == P()
  for name in ('embedding/kernel', 'head/kernel', 'cls', BLOCK + 'LayerNorm_0/scale',
               'Transformer/posembed_input/pos_embedding'):
    assert specs[name] == P(), name


def test_tensor_parallel_covers_mixer_mlps():
  specs = _specs('tensor_parallel', model='Mixer_Nano_2')
  assert specs['MixerBlock_0/token_mixing/Dense_0/kernel'] == P(None, 'model')
  assert specs['MixerBlock_0/channel_mixing/Dense_1/kernel'] == P('model')


def test_fsdp_shards_largest_divisible_dim_over_data():
  specs = _specs('fsdp', sizes=(4,), names=('data',))
  assert specs[MLP + 'Dense_0/kernel'] == P(None, 'data')  # (32, 128): 128 wins
  assert specs[MLP + 'Dense_1/kernel'] == P('data')        # (128, 32)
  assert specs[ATTN + 'query/kernel'] == P('data')         # (32, 2, 16): 32 wins
  assert specs['head/bias'] == P()                          # (10,): 4 does not divide
  assert specs['embedding/kernel'] == P(None, None, None, 'data')  # (2, 2, 3, 32)


def test_tensor_parallel_plus_fsdp_compose():
  specs = _specs('tensor_parallel+fsdp')
  assert specs[ATTN + 'query/kernel'] == P('data', 'model')  # (32, 2, 16)
  assert specs[ATTN + 'out/kernel'] == P('model', None, 'data')  # (2, 16, 32)
  assert specs[MLP + 'Dense_0/kernel'] == P('data', 'model')
  assert specs[MLP + 'Dense_0/bias'] == P('model')  # no free dim left for 'data'
  assert _specs(['tensor_parallel', 'fsdp']) == specs


def test_indivisible_dim_falls_back_to_replicated():
  # 2 heads cannot be split 4 ways; the 128-wide MLP still can.
  specs = _specs('tensor_parallel', sizes=(2, 4))
  assert specs[ATTN + 'query/kernel'] == P()
  assert specs[MLP + 'Dense_0/kernel'] == P(None, 'model')


def test_explicit_rules_come_first_and_lists_become_tuples():
  specs = _specs([(r'^head/kernel$', [None, ['data', 'model']]), 'tensor_parallel'],
                 sizes=(1, 2))
  assert specs['head/kernel'] == P(None, ('data', 'model'))  # 10 % 2 == 0
  assert specs[MLP + 'Dense_0/kernel'] == P(None, 'model')


def test_rule_errors_are_clear():
  with pytest.raises(ValueError, match="Did you mean 'tensor_parallel'"):
    _specs('tensor_paralel')
  with pytest.raises(ValueError, match=r"mesh axis 'model'.*\('data',\)"):
    _specs('tensor_parallel', sizes=(4,), names=('data',))
  with pytest.raises(ValueError, match="'head/bias' has 2 entries"):
    _specs([(r'^head/bias$', ('data', None))], sizes=(1,), names=('data',))


def test_param_shardings_are_named_shardings():
  mesh = sharding.make_mesh([('data', -1)])
  shardings = sharding.param_shardings(
      models.param_shapes(zoo.get('Nano_2')), mesh, 'fsdp')
  leaves = jax.tree.leaves(shardings)
  assert leaves and all(isinstance(s, jax.sharding.NamedSharding) for s in leaves)
  assert all(s.mesh is mesh for s in leaves)


def test_optimizer_state_is_sharded_like_its_parameters():
  params = models.param_shapes(zoo.get('Nano_2'))
  config = ml_collections.ConfigDict({
      'total_steps': 1000, 'optim': {'name': 'adamw', 'frozen': '^head/'}})
  tx, _ = optim.make_optimizer(complete_sections(config))
  state = jax.eval_shape(tx.init, params)
  mesh = sharding.make_mesh([('data', -1)])
  rules = [(r'^cls$', ('data',)), 'fsdp']  # an anchored rule still applies
  want = dict(param_paths.flatten_with_paths(
      sharding.param_specs(params, mesh, rules)))
  got = param_paths.flatten_with_paths(
      sharding.state_shardings(state, params, mesh, rules))
  moments = [(p, s.spec) for p, s in got if '/mu/' in p or '/nu/' in p]
  # Adam's mu and nu for every trainable (not frozen) parameter.
  assert len(moments) == 2 * (len(want) - 2)
  for path, spec in moments:
    param_path = path.split('/mu/')[-1].split('/nu/')[-1]
    assert spec == want[param_path], path
  assert [s.spec for p, s in got if p.endswith('count')] == [P(), P()]


# ------------------------------------------------------------------ 8 devices

_SHARDED_FORWARD = r'''
import json
import jax, jax.numpy as jnp
import numpy as np
from vit_compress import models, param_paths, sharding, zoo

out = {'device_count': jax.device_count()}
out['mesh_all'] = dict(sharding.make_mesh([('data', -1)]).shape)
out['mesh_rest'] = dict(sharding.make_mesh([('data', -1), ('model', 2)]).shape)
try:
  sharding.make_mesh([('data', 3)])
except ValueError as e:
  out['error'] = str(e)

mesh = sharding.make_mesh([('data', 4), ('model', 2)])
config = zoo.get('Nano_2')
shapes = models.param_shapes(config)
# Random values everywhere (the head starts at zero, which would hide errors);
# numpy, because dozens of small eager jax calls are slow on a busy CPU.
rng = np.random.default_rng(1)
params = jax.tree.map(
    lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes)
images = jnp.asarray(rng.standard_normal((8, 8, 8, 3)), jnp.float32)
model = models.build(config)
forward = lambda p, x: model.apply({'params': p}, x)
want = jax.jit(forward)(params, images)

shardings = sharding.param_shardings(shapes, mesh, 'tensor_parallel+fsdp')
sharded = jax.device_put(params, shardings)
x = jax.device_put(images, sharding.batch_sharding(mesh))
got = jax.jit(forward, out_shardings=sharding.batch_sharding(mesh))(sharded, x)

out['logit_std'] = float(want.std())
out['max_logit_diff'] = float(jnp.abs(got - want).max())
out['logits_spec'] = str(got.sharding.spec)
out['specs'] = {p: str(a.sharding.spec) for p, a in param_paths.flatten_with_paths(sharded)}
out['shard_shapes'] = {p: list(a.addressable_shards[0].data.shape)
                       for p, a in param_paths.flatten_with_paths(sharded)}
print('RESULT', json.dumps(out))
'''


@pytest.mark.slow
def test_sharded_forward_matches_unsharded_on_8_devices():
  out = _run_with_devices(_SHARDED_FORWARD)
  assert out['device_count'] == 8
  assert out['mesh_all'] == {'data': 8}
  assert out['mesh_rest'] == {'data': 4, 'model': 2}
  assert 'needs 3 devices but there are 8' in out['error']
  q = ATTN + 'query/kernel'
  assert out['specs'][q] == str(P('data', 'model'))
  assert out['shard_shapes'][q] == [32 // 4, 2 // 2, 16]
  assert out['shard_shapes'][MLP + 'Dense_0/kernel'] == [32 // 4, 128 // 2]
  assert out['shard_shapes']['head/bias'] == [10]  # replicated
  assert out['logits_spec'] == str(P(('data',)))
  assert out['logit_std'] > 0.1  # a real comparison, not zeros against zeros
  assert out['max_logit_diff'] < 1e-5


# ------------------------------------------------------------------ multi-host start-up

def test_initialize_distributed_off_by_default():
  assert sharding.initialize_distributed(None) is False
  config = {'distributed': complete_section('distributed', {'enabled': False})}
  assert sharding.initialize_distributed(_Config(config)) is False
  with pytest.raises(ValueError, match='process_id=2'):
    sharding.initialize_distributed(_Config({'distributed': complete_section(
        'distributed', {'enabled': True, 'coordinator_address': 'localhost:1',
                        'num_processes': 2, 'process_id': 2})}))


class _Config(dict):
  """Just enough of a ConfigDict: `.get`."""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_TWO_PROCESSES = r'''
import json, sys
import ml_collections
import jax
from vit_compress import sharding
config = ml_collections.ConfigDict({'distributed': {
    'enabled': True, 'coordinator_address': sys.argv[1],
    'num_processes': 2, 'process_id': int(sys.argv[2])}})
started = sharding.initialize_distributed(config)
print('RESULT', json.dumps({'started': started, 'index': jax.process_index(),
                            'processes': jax.process_count(),
                            'devices': jax.device_count(),
                            'local': jax.local_device_count(),
                            'gloo': jax.config.jax_cpu_collectives_implementation}))
'''


@pytest.mark.slow
def test_initialize_distributed_two_cpu_processes():
  address = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, '-c', _TWO_PROCESSES, address, str(i)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  results = []
  for proc in procs:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    line = [l for l in stdout.splitlines() if l.startswith('RESULT ')][-1]
    results.append(json.loads(line[len('RESULT '):]))
  assert sorted(r['index'] for r in results) == [0, 1]
  for r in results:
    assert r['started'] and r['processes'] == 2
    assert r['devices'] == 2 and r['local'] == 1
    assert r['gloo'] == 'gloo'
