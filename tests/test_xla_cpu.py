"""The XLA CPU defaults our commands set (`vit_compress/xla_cpu.py`): added
only where the user's XLA_FLAGS is silent, and numerically the previous
default: the same logits and the same SGD step to float32 rounding."""
import os

import numpy as np
import pytest

from tests.helpers import processes
from vit_compress import cli
from vit_compress import xla_cpu

_FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def test_defaults_fill_only_what_the_user_left_unset():
  env = {}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == [f'--{_FLAG}=']
  assert env['XLA_FLAGS'] == f'--{_FLAG}='

  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  xla_cpu.apply_defaults(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=8 --{_FLAG}='

  mine = f'--xla_force_host_platform_device_count=2 --{_FLAG}=individual_dot'
  env = {'XLA_FLAGS': mine}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == []
  assert env['XLA_FLAGS'] == mine


def test_only_for_the_jaxlib_versions_it_was_measured_on():
  # XLA aborts on a flag its jaxlib does not know: an older jaxlib gets none.
  env = {}
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.7.1') == []
  assert 'XLA_FLAGS' not in env
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.11.0') == []
  assert xla_cpu.apply_defaults(env, jaxlib_version='0.10.2') == [f'--{_FLAG}=']


def test_commands_add_the_defaults_before_main_runs(monkeypatch):
  from absl import app  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  seen = {}
  monkeypatch.setattr(app, 'run', lambda main, **kw: main(['prog']))
  cli.run_command(lambda argv: seen.update(flags=os.environ['XLA_FLAGS']))
  assert seen['flags'] == f'--{_FLAG}='


# One process per setting (XLA reads its flags once): a ViT's logits and
# one SGD-with-momentum step, plus whether the compiled step calls YNNPACK,
# so the comparison cannot pass by both runs using the same code.
_WORKER = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from vit_compress import models, xla_cpu, zoo
if sys.argv[1] == 'new':
  xla_cpu.apply_defaults()
config = zoo.get('Micro_2', image_size=32, num_classes=10)
module = models.build(config)
params = models.init(config, jax.random.key(0))
leaves, tree = jax.tree.flatten(params)
keys = jax.random.split(jax.random.key(1), len(leaves))
params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])
images = jax.random.normal(jax.random.key(2), (8, 32, 32, 3))
labels = jnp.arange(8) % 10
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))

def step(p, opt):
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      module.apply({'params': p}, images, train=True), labels).mean()
  loss, grads = jax.value_and_grad(loss_fn)(p)
  updates, opt = tx.update(grads, opt, p)
  return optax.apply_updates(p, updates), loss

compiled = jax.jit(step).lower(params, tx.init(params)).compile()
new_params, loss = compiled(params, tx.init(params))
logits = jax.jit(lambda p: module.apply({'params': p}, images))(params)
print('RESULT ' + json.dumps({
    'calls_ynnpack': 'ynn_fusion' in compiled.as_text(),
    'loss': float(loss), 'logits': np.asarray(logits).tolist(),
    'update_norm': float(optax.global_norm(jax.tree.map(jnp.subtract, new_params, params))),
    'params': [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(new_params)]}))
'''


@pytest.mark.slow
def test_defaults_keep_logits_and_one_sgd_step():
  old, new = processes.results([
      processes.start_python(_WORKER, 'old', env={'XLA_FLAGS': f'--{_FLAG}=individual_dot'}),
      processes.start_python(_WORKER, 'new', env={'XLA_FLAGS': ''})])
  assert old['calls_ynnpack'] and not new['calls_ynnpack']
  logits_old, logits_new = np.asarray(old['logits']), np.asarray(new['logits'])
  assert np.abs(logits_old).max() > 0.1   # not a comparison of zeros
  np.testing.assert_allclose(logits_new, logits_old, rtol=1e-5, atol=1e-5)
  assert new['loss'] == pytest.approx(old['loss'], rel=1e-6)
  assert old['update_norm'] > 1e-3   # the step changed the parameters
  assert new['update_norm'] == pytest.approx(old['update_norm'], rel=1e-5)
  for a, b in zip(old['params'], new['params']):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
