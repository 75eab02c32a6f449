"""Pruning masks: exact counts, N:M groups, schedules, and zeros that survive training."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers.params import random_params
from tests.helpers.pruning_helpers import prune_config
from vit_compress import models
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import structure
from vit_compress.registry import UnknownNameError


def _prune(params, config, step=0, scores=None):
  masks = pruning.init_masks(params, config)
  return pruning.update_masks(params, masks, step, config, scores)


def _flat(tree):
  return {k: np.asarray(v) for k, v in structure.flatten(tree)[0].items()}


def test_bad_config_is_a_clear_error():
  params = random_params()
  with pytest.raises(ValueError, match=r'sparsity=1.0 must be in \[0, 1\)'):
    pruning.init_masks(params, prune_config(method='magnitude', sparsity=1.0))
  with pytest.raises(UnknownNameError, match="Did you mean 'magnitude'"):
    pruning.init_masks(params, prune_config(method='magnitud'))
  with pytest.raises(UnknownNameError, match='config.prune key'):
    c = prune_config()
    c.sparsty = 0.5
    pruning.validate(c)
  with pytest.raises(ValueError, match='1 <= n < m'):
    pruning.validate(prune_config(method='n_m', n=4, m=4))
  with pytest.raises(ValueError, match='needs scores'):
    _prune(params, prune_config(method='magnitude', criterion='taylor'))


def test_masks_mirror_params_and_default_to_transformer_kernels():
  params = random_params()
  masks = pruning.init_masks(params, prune_config(method='magnitude'))
  assert jax.tree.structure(masks) == jax.tree.structure(params)
  flat_p, flat_m = _flat(params), _flat(masks)
  full = {p for p, m in flat_m.items() if m.shape}
  expected = {p for p in flat_p if 'encoderblock_' in p and p.endswith('/kernel')}
  assert full == expected and len(full) == 2 * 6  # q, k, v, out, Dense_0, Dense_1
  for p in full:
    assert flat_m[p].shape == flat_p[p].shape and np.all(flat_m[p] == 1)
  assert all(flat_m[p].shape == () and flat_m[p] == 1 for p in set(flat_p) - full)
  # Shapes alone suffice, so a trainer can eval_shape its state for sharding.
  shapes = jax.eval_shape(lambda p: pruning.init_masks(p, prune_config(method='magnitude')),
                          models.param_shapes(zoo.get('Nano_2')))
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, masks)


def test_include_1d_selects_biases_and_scales():
  params = random_params()
  flat_p = _flat(params)
  without = _flat(pruning.init_masks(params, prune_config(method='magnitude', params_regex='.*')))
  with_1d = _flat(pruning.init_masks(
      params, prune_config(method='magnitude', params_regex='.*', include_1d=True)))
  bias = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/bias'
  assert flat_p[bias].ndim == 2  # (heads, head_dim), still a bias
  for p in (bias, 'Transformer/encoder_norm/scale', 'head/bias', 'cls'):
    assert without[p].shape == () and with_1d[p].shape == flat_p[p].shape
  pos = 'Transformer/posembed_input/pos_embedding'
  assert without[pos].shape == flat_p[pos].shape


def test_magnitude_prunes_exact_count_of_smallest_per_parameter():
  params = random_params()
  masks = _flat(_prune(params, prune_config(method='magnitude', sparsity=0.3)))
  flat_p = _flat(params)
  for p, m in masks.items():
    if not m.shape:
      continue
    w = np.abs(flat_p[p])
    assert np.sum(m == 0) == math.floor(0.3 * m.size)
    assert w[m == 0].max() <= w[m == 1].min()


def test_global_magnitude_uses_one_threshold():
  params = random_params()
  masks = _flat(_prune(params, prune_config(method='global_magnitude', sparsity=0.6)))
  flat_p = _flat(params)
  pruned = [p for p, m in masks.items() if m.shape]
  total = sum(masks[p].size for p in pruned)
  zeros = sum(int(np.sum(masks[p] == 0)) for p in pruned)
  assert zeros == math.floor(0.6 * total)
  dropped = max(np.abs(flat_p[p])[masks[p] == 0].max() for p in pruned)
  kept = min(np.abs(flat_p[p])[masks[p] == 1].min() for p in pruned)
  assert dropped <= kept
  per_param = {round(float(np.mean(masks[p] == 0)), 3) for p in pruned}
  assert len(per_param) > 1  # layers end up with different sparsities


def test_random_is_exact_and_seeded():
  params = random_params()
  a = _flat(_prune(params, prune_config(method='random', sparsity=0.5)))
  b = _flat(_prune(params, prune_config(method='random', sparsity=0.5)))
  c = _flat(_prune(params, prune_config(method='random', sparsity=0.5, seed=1)))
  mag = _flat(_prune(params, prune_config(method='magnitude', sparsity=0.5)))
  k = 'Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel'
  assert np.sum(a[k] == 0) == a[k].size // 2
  np.testing.assert_array_equal(a[k], b[k])
  assert np.any(a[k] != c[k]) and np.any(a[k] != mag[k])


def _groups_of_m(path, x, m):
  """The test's own view of N:M groups: m consecutive entries of the input axis."""
  if re.search(r'(query|key|value)/kernel$', path):  # (D, heads, head_dim)
    return x.reshape(x.shape[0] // m, m, -1)
  return x.reshape(-1, x.shape[-1]).reshape(-1, m, x.shape[-1])  # (in..., out)


def test_two_of_four_keeps_the_two_largest_in_every_group():
  params = random_params()
  masks = _flat(_prune(params, prune_config(method='n_m', n=2, m=4)))
  flat_p = _flat(params)
  checked = 0
  for p, m in masks.items():
    if not m.shape:
      continue
    groups = _groups_of_m(p, m, 4)
    np.testing.assert_array_equal(groups.sum(axis=1), 2)
    w = _groups_of_m(p, np.abs(flat_p[p]), 4)
    assert np.all(np.where(groups == 0, w, 0).max(1) <= np.where(groups == 1, w, np.inf).min(1))
    masked = _groups_of_m(p, flat_p[p] * m, 4)
    np.testing.assert_array_equal(np.count_nonzero(masked, axis=1), 2)
    checked += 1
  assert checked == 12
  with pytest.raises(ValueError, match='not divisible by m=5'):
    _prune(params, prune_config(method='n_m', n=2, m=5))


def test_schedules_follow_their_formulas():
  c = prune_config(method='magnitude', schedule='gradual', sparsity=0.8,
              initial_sparsity=0.2, begin_step=10, end_step=50, frequency=10)
  for step in (0, 10, 15, 20, 30, 50, 60):
    update, target = pruning.scheduled(step, c)
    progress = min(max((step - 10) / 40, 0), 1)
    assert float(target) == pytest.approx(0.8 + (0.2 - 0.8) * (1 - progress) ** 3)
    assert bool(update) == (step in (10, 20, 30, 50))
  c.schedule = 'iterative'
  assert float(pruning.scheduled(30, c)[1]) == pytest.approx(0.5)
  c.schedule = 'one_shot'
  assert [bool(pruning.scheduled(s, c)[0]) for s in (0, 10, 20)] == [False, True, False]
  assert float(pruning.scheduled(10, c)[1]) == pytest.approx(0.8)


def test_gradual_masks_inside_jit_grow_on_schedule_and_only_shrink():
  params = random_params()
  c = prune_config(method='magnitude', schedule='gradual', sparsity=0.8,
              begin_step=2, end_step=8, frequency=2)
  update = jax.jit(lambda p, m, s: pruning.update_masks(p, m, s, c))
  masks = pruning.init_masks(params, c)
  key = 'Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel'
  size = _flat(masks)[key].size
  previous = _flat(masks)[key]
  for step in range(11):
    masks = update(params, masks, jnp.int32(step))
    params = pruning.apply_masks(params, masks)
    m = _flat(masks)[key]
    _, target = pruning.scheduled(step, c)
    if step in (2, 4, 6, 8):
      assert np.sum(m == 0) == math.floor(float(target) * size + 1e-3)
    else:
      np.testing.assert_array_equal(m, previous)
    assert np.all(m <= previous)  # what is pruned stays pruned
    previous = m
  assert np.sum(previous == 0) == math.floor(0.8 * size)


@pytest.mark.parametrize('optimizer,method', [
    (optax.adam(1e-2), 'n_m'), (optax.sgd(0.1, momentum=0.9), 'magnitude')])
def test_pruned_weights_stay_exactly_zero_under_training(optimizer, method):
  config = zoo.get('Nano_2')
  model = models.build(config)
  params = random_params()
  prune = prune_config(method=method, sparsity=0.5, begin_step=3)  # after momentum built up
  images = jax.random.normal(jax.random.key(3), (8, 8, 8, 3))
  labels = jax.nn.one_hot(jnp.arange(8) % 10, 10)

  def loss_fn(p):
    return optax.softmax_cross_entropy(model.apply({'params': p}, images), labels).mean()

  @jax.jit
  def step(p, masks, opt_state, i, mask_the_updates):
    masks = pruning.update_masks(p, masks, i, prune)
    p = pruning.apply_masks(p, masks)
    loss, grads = jax.value_and_grad(loss_fn)(pruning.apply_masks(p, masks))
    updates, opt_state = optimizer.update(grads, opt_state, p)
    updates = jax.lax.cond(mask_the_updates,  # one compile for both runs
                           lambda: pruning.mask_updates(updates, masks),
                           lambda: updates)
    return optax.apply_updates(p, updates), masks, opt_state, loss

  def run(mask_the_updates):
    p, masks, opt_state = params, pruning.init_masks(params, prune), optimizer.init(params)
    losses = []
    for i in range(12):
      p, masks, opt_state, loss = step(p, masks, opt_state, jnp.int32(i),
                                       jnp.bool_(mask_the_updates))
      losses.append(float(loss))
    return _flat(p), _flat(masks), losses

  p, masks, losses = run(True)
  start = _flat(params)
  pruned = [k for k, m in masks.items() if m.shape]
  assert np.mean([np.mean(masks[k] == 0) for k in pruned]) == pytest.approx(0.5)
  for k in pruned:
    assert np.all(p[k][masks[k] == 0] == 0.0)
    changed = p[k][masks[k] == 1] != start[k][masks[k] == 1]
    assert np.mean(changed) > 0.5  # the kept weights still train
  assert losses[-1] < losses[3]
  # Control: without masking the updates, momentum revives pruned weights.
  p, masks, _ = run(False)
  assert any(np.any(p[k][masks[k] == 0] != 0) for k in pruned)


def test_taylor_accumulates_abs_weight_times_grad_and_prunes_lowest():
  config = zoo.get('Nano_2')
  model = models.build(config)
  params = random_params()
  prune = prune_config(method='magnitude', criterion='taylor', sparsity=0.5)
  scores = pruning.init_scores(params, prune)
  grad_fn = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply({'params': p}, x) ** 2)))
  key = 'Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel'
  expected = 0
  for i in range(3):
    grads = grad_fn(params, jax.random.normal(jax.random.key(i), (4, 8, 8, 3)))
    scores = pruning.accumulate_taylor(scores, params, grads)
    expected = expected + np.abs(_flat(params)[key] * _flat(grads)[key])
  flat_s = _flat(scores)
  np.testing.assert_allclose(flat_s[key], expected, rtol=1e-6)
  assert flat_s['head/kernel'].shape == ()  # not pruned: nothing accumulated
  m = _flat(_prune(params, prune, scores=scores))[key]
  assert np.sum(m == 0) == m.size // 2
  assert flat_s[key][m == 0].max() <= flat_s[key][m == 1].min()
  by_magnitude = _flat(_prune(params, prune_config(method='magnitude', sparsity=0.5)))[key]
  assert np.any(by_magnitude != m)


def test_sparsity_report_counts_zeros():
  params = random_params()
  masks = _prune(params, prune_config(method='magnitude', sparsity=0.25))
  stats = pruning.log_sparsity(masks, params, step=0)
  flat_p, flat_m = _flat(params), _flat(masks)
  all_params = sum(x.size for x in flat_p.values())
  zeros = sum(int(np.sum(m == 0)) for m in flat_m.values() if m.shape)
  masked = sum(m.size for m in flat_m.values() if m.shape)
  assert stats['total'] == pytest.approx(zeros / all_params)
  assert stats['total_prunable'] == pytest.approx(zeros / masked)
  key = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/kernel'
  assert stats[key] == pytest.approx(math.floor(0.25 * 1024) / 1024)
  assert 'head/bias' not in stats
