"""The scanned encoder (`model.scan`) is the unrolled one, compiled once per layer type.

Same parameter tree, same initial values, same logits and gradients to
float tolerance; checkpoints move between the two in both
directions; models whose layers differ fall back to the unrolled encoder.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vit_compress import checkpoint
from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo
from vit_compress.models import layer_stack

_TOL = dict(rtol=1e-5, atol=1e-5)


def _perturbed(config, seed=0):
  """Initial parameters plus noise, so the zero-initialised head is not zero."""
  params = models.init(config, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _images(config, n=4):
  size = config.image_size
  return jax.random.normal(jax.random.key(7), (n, size, size, 3))


def _logits(config, params, images, **kwargs):
  """The jitted forward (an eager Flax apply compiles op by op: slow)."""
  module = models.build(config)
  return jax.jit(lambda p, x: module.apply({'params': p}, x, **kwargs))(params, images)


def _loss(module, images):
  return lambda p: optax.softmax_cross_entropy_with_integer_labels(
      module.apply({'params': p}, images, train=True), jnp.arange(4)).mean()


def _pair(name='Micro_2', **overrides):
  return zoo.get(name, **overrides), zoo.get(name, scan=True, **overrides)


def _assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(param_paths.flatten_with_paths(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=path, **tol)


def test_stack_unstack_round_trip():
  params = models.init(zoo.get('Micro_2'), jax.random.key(0))
  stacked = layer_stack.stack({'params': params['Transformer']})['params']
  assert 'encoderblock_0' not in stacked
  assert stacked['encoderblock']['MlpBlock_0']['Dense_0']['kernel'].shape == (4, 64, 256)
  back = layer_stack.unstack({'params': stacked})['params']
  _assert_trees_close(back, params['Transformer'], rtol=0, atol=0)


@pytest.mark.parametrize('overrides', [{}, {'remat': True}, {'classifier': 'gap'}])
def test_same_init_logits_and_gradients(overrides):
  config, scanned = _pair(**overrides)
  init = models.init(config, jax.random.key(0))
  _assert_trees_close(models.init(scanned, jax.random.key(0)), init, rtol=0, atol=0)
  params, images = _perturbed(config), _images(config)
  logits = _logits(config, params, images)
  np.testing.assert_allclose(_logits(scanned, params, images), logits, **_TOL)
  assert np.abs(logits).max() > 0.1  # the comparison is not of zeros
  grads = lambda c: jax.jit(jax.grad(_loss(models.build(c), images)))(params)
  _assert_trees_close(grads(scanned), grads(config), **_TOL)


def test_the_trainers_forward_and_gradients_match_unrolled():
  """`train.model_outputs` applies the model with mutable collections
  (BatchNorm statistics while training; intermediates for feature
  distillation), which flax's map_variables once took for an init."""
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  config, scanned = _pair()
  params, images = _perturbed(config), _images(config)
  batch = {'image': images}

  def loss(c, capture=()):
    module = models.build(c)
    def f(p):
      out = train.model_outputs(module, c, p, batch, train=True, capture=capture)
      return optax.softmax_cross_entropy_with_integer_labels(
          out['logits'], jnp.arange(4)).mean()
    return jax.jit(jax.value_and_grad(f))(params)

  (value, grads), (value_scan, grads_scan) = loss(config), loss(scanned)
  assert value > 0.1
  np.testing.assert_allclose(value_scan, value, **_TOL)
  _assert_trees_close(grads_scan, grads, **_TOL)
  out = train.model_outputs(models.build(scanned), scanned, params, batch,
                            train=False, capture=('Transformer/encoder_norm',))
  assert out['intermediates']['Transformer/encoder_norm'].shape[0] == 4


def test_checkpoints_round_trip_both_ways(tmp_path):
  config, scanned = _pair()
  params, images = _perturbed(config), _images(config)
  want = _logits(config, params, images)
  for save_config, load_config, name in ((scanned, config, 'from_scan'),
                                         (config, scanned, 'to_scan')):
    checkpoint.save_model(str(tmp_path / name), params, save_config)
    _, loaded = checkpoint.load_model(str(tmp_path / name))
    np.testing.assert_allclose(_logits(load_config, loaded, images), want, **_TOL)
    npz = str(tmp_path / f'{name}.npz')
    checkpoint.export_npz(npz, params)  # vit_jax's pre-Linen names
    from_npz = checkpoint.load_npz(npz, load_config)
    np.testing.assert_allclose(_logits(load_config, from_npz, images), want, **_TOL)


def test_big_vision_scanned_npz_loads_into_a_scanned_model(tmp_path):
  config, scanned = _pair()
  params, images = _perturbed(config), _images(config)
  tower = dict(params)
  tower['Transformer'] = layer_stack.stack({'params': params['Transformer']})['params']
  npz = str(tmp_path / 'bv.npz')
  np.savez(npz, **{f'params/{k}': np.asarray(v)
                   for k, v in param_paths.flatten_with_paths(tower)})
  loaded = checkpoint.load_npz(npz, scanned)
  np.testing.assert_allclose(_logits(scanned, loaded, images),
                             _logits(config, params, images), **_TOL)


def test_layers_that_differ_fall_back_to_unrolled():
  config, scanned = _pair()
  for c in (config, scanned):
    c.transformer.num_heads = (4, 2, 4, 1)  # a pruned model
    c.transformer.mlp_dim = (256, 128, 256, 64)
  assert models.vit_lib.scan_blocker((4, 2, 4, 1), (256,) * 4) == (
      'transformer.num_heads differs between layers')
  assert models.vit_lib.scan_blocker((4,) * 4, (256,) * 4, tome_r=2)
  assert models.vit_lib.scan_blocker((4,) * 4, (256,) * 4) is None
  assert not models.build(scanned).scan
  params, images = _perturbed(config), _images(config)
  np.testing.assert_allclose(_logits(scanned, params, images),
                             _logits(config, params, images), rtol=0, atol=0)


def test_dropout_and_stochastic_depth_run_scanned():
  _, scanned = _pair()
  scanned.transformer.dropout_rate = 0.1
  scanned.transformer.stochastic_depth = 0.5
  params, images = _perturbed(scanned), _images(scanned)
  module = models.build(scanned)
  run = jax.jit(lambda seed: module.apply({'params': params}, images, train=True,
                                          rngs={'dropout': jax.random.key(seed)}))
  assert np.isfinite(run(0)).all()
  assert not np.allclose(run(0), run(1))  # dropout keys differ per call
  np.testing.assert_allclose(run(0), run(0), rtol=0, atol=0)
  assert not np.allclose(run(0), _logits(scanned, params, images))
