"""Tests for vit_compress.optim: schedules and the optax chain, on hand-computed numbers."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vit_compress import models
from vit_compress import optim
from vit_compress import zoo
from vit_compress.config_sections import complete_section
from vit_compress.config_sections import complete_sections
from vit_compress.registry import UnknownNameError


def _config(total_steps=100, **optim_overrides):
  """An experiment config with a constant lr 0.1, no warm-up, no clipping."""
  config = ml_collections.ConfigDict()
  config.total_steps = total_steps
  config.optim = optim.default_optim_config()
  config.optim.grad_clip_norm = 0.0
  config.optim.update(optim_overrides)
  config.schedule = optim.default_schedule_config()
  config.schedule.update(dict(base_lr=0.1, warmup_steps=0, decay_type='constant'))
  return config


def _steps(tx, params, grads_list):
  """Applies tx to each grads in turn; returns the list of updates."""
  state = tx.init(params)
  out = []
  for grads in grads_list:
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def _np(tree):
  return jax.tree.map(np.asarray, tree)


# ------------------------------------------------------------------ configs

def test_default_configs_are_vit_jax_finetuning():
  o, s = optim.default_optim_config(), optim.default_schedule_config()
  assert (o.name, o.momentum, o.grad_clip_norm, o.weight_decay) == ('sgd', 0.9, 1.0, 0.0)
  assert (s.base_lr, s.warmup_steps, s.decay_type) == (0.03, 500, 'cosine')
  # Every key the code reads is present, so --config.optim.x=y overrides work.
  for key in ('frozen', 'lr_mults', 'mu_dtype', 'weight_decay_mask', 'accum_steps',
              'b1', 'b2', 'eps', 'nesterov'):
    assert key in o
  assert 'end_lr_ratio' in s


def test_partial_section_gets_defaults():
  config = ml_collections.ConfigDict({'total_steps': 1000,
                                      'optim': {'name': 'adamw'},
                                      'schedule': {'base_lr': 1e-3}})
  tx, schedule = optim.make_optimizer(complete_sections(config))
  state = tx.init({'w': jnp.ones(2)})
  assert sum(x.size for x in jax.tree.leaves(state)) > 4  # adam's mu, nu + counts
  np.testing.assert_allclose(float(schedule(500)), 1e-3)  # default 500 warm-up
  assert float(schedule(1000)) == 0.0  # default cosine to end_lr_ratio 0


def test_unknown_names_and_keys_list_the_known_ones():
  with pytest.raises(UnknownNameError, match="'adamw'"):
    optim.make_optimizer(_config(name='adamx'))
  config = _config()
  config.schedule.decay_type = 'cosin'
  with pytest.raises(UnknownNameError, match="Did you mean 'cosine'"):
    optim.make_optimizer(config)
  config = _config()
  config.optim.momentun = 0.5
  with pytest.raises(ValueError, match="Did you mean 'momentum'"):
    optim.make_optimizer(complete_sections(config))


def test_bad_schedule_settings_are_errors():
  config = _config(total_steps=10)
  config.schedule.warmup_steps = 20
  with pytest.raises(ValueError, match='warmup_steps=20'):
    optim.make_optimizer(config)
  config = _config()
  config.total_steps = None
  with pytest.raises(ValueError, match='total_steps'):
    optim.make_optimizer(config)
  with pytest.raises(ValueError, match='mu_dtype'):
    optim.make_optimizer(_config(mu_dtype='float77'))


# ------------------------------------------------------------------ schedules

@pytest.mark.parametrize('decay_type', ['cosine', 'linear', 'constant', 'rsqrt'])
def test_schedule_values(decay_type):
  base, warmup, total, end = 0.1, 10, 110, 0.1
  schedule = optim.make_schedule(complete_section('schedule', {
      'base_lr': base, 'warmup_steps': warmup, 'decay_type': decay_type,
      'end_lr_ratio': end, 'timescale': 100}), total)
  # Linear warm-up from 0, shared by all decays.
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(warmup)), base, rtol=1e-6)
  # After warm-up, progress p = (step - 10) / 100.
  expected = {
      'cosine': lambda p: base * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * p))),
      'linear': lambda p: base * (end + (1 - end) * (1 - p)),
      'constant': lambda p: base,
      'rsqrt': lambda p: base / math.sqrt(1 + 100 * p / 100),
  }[decay_type]
  for step in (35, 60, 110):
    p = (step - warmup) / (total - warmup)
    np.testing.assert_allclose(float(schedule(step)), expected(p), rtol=1e-5)
  if decay_type in ('cosine', 'linear'):  # clamped at the end value past the horizon
    np.testing.assert_allclose(float(schedule(500)), base * end, rtol=1e-5)
  # Written out: cosine at half-way is the mean of start and end, 0.055.
  if decay_type == 'cosine':
    np.testing.assert_allclose(float(schedule(60)), 0.055, rtol=1e-5)


def test_schedule_is_jittable_on_int_steps():
  schedule = optim.make_schedule(complete_section('schedule', {
      'base_lr': 1.0, 'warmup_steps': 4, 'decay_type': 'linear'}), 8)
  lrs = jax.jit(jax.vmap(schedule))(jnp.arange(9))
  np.testing.assert_allclose(lrs, [0, .25, .5, .75, 1, .75, .5, .25, 0], atol=1e-6)


# ------------------------------------------------------------------ optimisers

def test_sgd_momentum_by_hand():
  tx, _ = optim.make_optimizer(_config(momentum=0.9))
  p = {'w': jnp.array([1.0, 2.0])}
  u1, u2 = _steps(tx, p, [{'w': jnp.array([1.0, -1.0])},
                          {'w': jnp.array([0.5, 0.5])}])
  # v1 = g1 = [1, -1]; v2 = 0.9 v1 + g2 = [1.4, -0.4]; update = -0.1 v.
  np.testing.assert_allclose(u1['w'], [-0.1, 0.1], rtol=1e-6)
  np.testing.assert_allclose(u2['w'], [-0.14, 0.04], rtol=1e-5)


def test_sgd_nesterov_by_hand():
  tx, _ = optim.make_optimizer(_config(momentum=0.9, nesterov=True))
  (u1,) = _steps(tx, {'w': jnp.array([1.0])}, [{'w': jnp.array([1.0])}])
  # Nesterov: v1 = g; update = -lr (g + 0.9 v1) = -0.19.
  np.testing.assert_allclose(u1['w'], [-0.19], rtol=1e-6)


@pytest.mark.parametrize('clip, expected', [(1.0, [-0.06, -0.08]),
                                            (10.0, [-0.3, -0.4])])
def test_global_norm_clipping(clip, expected):
  tx, _ = optim.make_optimizer(_config(momentum=0.0, grad_clip_norm=clip))
  (u,) = _steps(tx, {'w': jnp.zeros(2)}, [{'w': jnp.array([3.0, 4.0])}])
  # |g| = 5: clipped to norm 1 -> [0.6, 0.8]; a bound of 10 leaves it alone.
  np.testing.assert_allclose(u['w'], expected, rtol=1e-6)


def _dense():
  return {'dense': {'kernel': jnp.array([2.0]), 'bias': jnp.array([2.0])}}


def _half_grads():
  return {'dense': {'kernel': jnp.array([0.5]), 'bias': jnp.array([0.5])}}


def test_sgd_weight_decay_is_l2_on_kernels_only():
  tx, _ = optim.make_optimizer(_config(momentum=0.0, weight_decay=0.1))
  (u,) = _steps(tx, _dense(), [_half_grads()])
  # kernel: g + wd p = 0.5 + 0.2 = 0.7 -> -0.07; the bias is not decayed.
  np.testing.assert_allclose(u['dense']['kernel'], [-0.07], rtol=1e-6)
  np.testing.assert_allclose(u['dense']['bias'], [-0.05], rtol=1e-6)


def test_adamw_decay_is_decoupled_adam_is_not():
  # First Adam step: m_hat = g, v_hat = g^2, so the direction is g/|g| = 1.
  tx, _ = optim.make_optimizer(_config(name='adamw', weight_decay=0.01, eps=1e-12))
  (u,) = _steps(tx, _dense(), [_half_grads()])
  # AdamW: -lr (1 + wd p) = -0.1 (1 + 0.02) on the kernel; bias not decayed.
  np.testing.assert_allclose(u['dense']['kernel'], [-0.102], rtol=1e-5)
  np.testing.assert_allclose(u['dense']['bias'], [-0.1], rtol=1e-5)
  # Adam + L2: the decay joins the gradient before normalisation, so the
  # first step is still -lr * sign(g + wd p) = -0.1.
  tx, _ = optim.make_optimizer(_config(name='adam', weight_decay=0.01, eps=1e-12))
  (u,) = _steps(tx, _dense(), [_half_grads()])
  np.testing.assert_allclose(u['dense']['kernel'], [-0.1], rtol=1e-5)


def test_default_decay_mask_selects_kernels_of_a_vit():
  params = models.param_shapes(zoo.get('Nano_2'))
  mask = optim.regex_mask(params, optim.default_optim_config().weight_decay_mask)
  decayed = [p for p, m in zip(optim.path_names(params), jax.tree.leaves(mask)) if m]
  # embedding + head + per layer (q, k, v, out, Dense_0, Dense_1), 2 layers.
  assert len(decayed) == 2 + 2 * 6
  assert all(p.endswith('/kernel') for p in decayed)
  assert 'cls' not in decayed
  assert 'Transformer/posembed_input/pos_embedding' not in decayed


def test_lr_mults_first_match_wins():
  params = {'head': {'kernel': jnp.zeros(1), 'bias': jnp.zeros(1)},
            'body': {'kernel': jnp.zeros(1), 'scale': jnp.zeros(1)}}
  tx, _ = optim.make_optimizer(_config(
      momentum=0.0, lr_mults=(('^head/', 10.0), ('kernel$', 0.5))))
  (u,) = _steps(tx, params, [jax.tree.map(jnp.ones_like, params)])
  np.testing.assert_allclose(u['head']['kernel'], [-1.0], rtol=1e-6)  # 10, not 5
  np.testing.assert_allclose(u['head']['bias'], [-1.0], rtol=1e-6)
  np.testing.assert_allclose(u['body']['kernel'], [-0.05], rtol=1e-6)
  np.testing.assert_allclose(u['body']['scale'], [-0.1], rtol=1e-6)


def test_frozen_params_get_zero_updates_and_no_state():
  # Values do not matter here, only the real tree of paths and shapes.
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                        models.param_shapes(zoo.get('Nano_2')))
  frozen = r'^Transformer/encoderblock_0/'
  tx, _ = optim.make_optimizer(_config(name='adamw', weight_decay=0.1, eps=1e-12,
                                       grad_clip_norm=1.0, frozen=frozen))
  is_frozen = optim.regex_mask(params, frozen)
  # Frozen grads are huge: if clipping counted them, the others would shrink.
  grads = jax.tree.map(lambda x, f: jnp.full_like(x, 1e3 if f else 1e-4),
                       params, is_frozen)
  state = tx.init(params)
  n_frozen = sum(x.size for x, f in zip(jax.tree.leaves(params),
                                        jax.tree.leaves(is_frozen)) if f)
  n_trainable = sum(x.size for x in jax.tree.leaves(params)) - n_frozen
  assert n_frozen > 0
  moments = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
  assert moments == 2 * n_trainable  # Adam's mu and nu, trainable params only

  updates, _ = jax.jit(tx.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  for path, f, old, new in zip(optim.path_names(params), jax.tree.leaves(is_frozen),
                               jax.tree.leaves(params), jax.tree.leaves(new_params)):
    if f:
      np.testing.assert_array_equal(new, old, err_msg=path)
  # Unclipped first Adam step on a trainable bias: exactly -lr * sign(g).
  np.testing.assert_allclose(updates['head']['bias'], -0.1, rtol=1e-4)


def test_regex_that_matches_nothing_is_an_error_with_real_paths():
  params = models.param_shapes(zoo.get('Nano_2'))
  tx, _ = optim.make_optimizer(_config(frozen='^img/'))
  with pytest.raises(ValueError) as e:
    tx.init(params)
  assert "'^img/'" in str(e.value) and 'config.optim.frozen' in str(e.value)
  assert 'Transformer/' in str(e.value)
  tx, _ = optim.make_optimizer(_config(lr_mults=(('^heads/', 2.0),)))
  with pytest.raises(ValueError, match=r"lr_mults.*'\^heads/'"):
    tx.init(params)


def test_mu_dtype_bfloat16_keeps_params_float32():
  params = {'w': jnp.ones((3,), jnp.float32)}
  tx, _ = optim.make_optimizer(_config(momentum=0.9, mu_dtype='bfloat16'))
  state = tx.init(params)
  assert {x.dtype for x in jax.tree.leaves(state) if x.ndim} == {jnp.dtype(jnp.bfloat16)}
  updates, state = tx.update({'w': jnp.full((3,), 0.5)}, state, params)
  new = optax.apply_updates(params, updates)
  assert new['w'].dtype == jnp.float32
  # The momentum (hence the update) has bfloat16's ~3 significant digits.
  np.testing.assert_allclose(new['w'], 1.0 - 0.1 * 0.5, rtol=1e-3)


def test_training_reduces_a_quadratic():
  # The default chain (SGD momentum, warm-up, cosine, clip) minimises |w - 3|^2.
  config = ml_collections.ConfigDict({
      'total_steps': 200, 'optim': optim.default_optim_config(),
      'schedule': {'base_lr': 0.1, 'warmup_steps': 10}})
  tx, _ = optim.make_optimizer(complete_sections(config))
  params = {'w': jnp.zeros(4)}
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(lambda p: jnp.sum((p['w'] - 3.0) ** 2))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(200):
    params, state = step(params, state)
  np.testing.assert_allclose(params['w'], 3.0, atol=1e-3)
