"""Tests for vit_compress.losses against values worked out by hand with `math`.

Logits such as [0, ln 3] are chosen so softmax gives simple fractions:
softmax([0, ln 3]) = [1/4, 3/4].
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_compress import losses
from vit_compress.config_sections import complete_sections
from vit_compress.registry import UnknownNameError

LN3 = math.log(3.0)


def _config(loss, **distill):
  config = ml_collections.ConfigDict({'loss': loss})
  config.distill = losses.default_distill_config()
  config.distill.update(distill)
  return config


def _batch(labels, mask=None, num_classes=2):
  labels = np.asarray(labels)
  batch = {'label': jnp.asarray(labels),
           'labels': jnp.asarray(np.eye(num_classes, dtype=np.float32)[labels])}
  if mask is not None:
    batch['mask'] = jnp.asarray(mask, jnp.float32)
  return batch


def _call(name, student, batch, **kwargs):
  return losses.LOSSES.get(name)(student, batch, **kwargs)


# ------------------------------------------------------------------ classification

def test_softmax_xent_by_hand_with_and_without_mask():
  student = {'logits': jnp.array([[0.0, LN3], [2.0, 0.0]])}
  # Example 0: p(label 1) = 3/4. Example 1: p(label 1) = 1 / (1 + e^2).
  x0, x1 = math.log(4 / 3), math.log(1 + math.e ** 2)
  loss, m = _call('softmax_xent', student, _batch([1, 1]))
  np.testing.assert_allclose(loss, (x0 + x1) / 2, rtol=1e-6)
  np.testing.assert_allclose(m['xent'], loss)
  np.testing.assert_allclose(m['accuracy'], 0.5)  # example 1 predicts class 0
  loss, m = _call('softmax_xent', student, _batch([1, 1], mask=[1, 0]))
  np.testing.assert_allclose(loss, x0, rtol=1e-6)
  np.testing.assert_allclose(m['accuracy'], 1.0)


def test_softmax_xent_reads_int_labels_alone():
  student = {'logits': jnp.array([[0.0, LN3]])}
  loss, _ = _call('softmax_xent', student, {'label': jnp.array([0])})
  np.testing.assert_allclose(loss, math.log(4.0), rtol=1e-6)  # p(0) = 1/4
  with pytest.raises(ValueError, match='onehot'):
    _call('softmax_xent', student, {'image': jnp.zeros(1)})


def test_sigmoid_xent_by_hand():
  student = {'logits': jnp.array([[0.0, LN3]])}
  # Class 0 (target 0): -log(1 - sigmoid(0)) = ln 2.
  # Class 1 (target 1): -log(sigmoid(ln 3)) = -log(3/4). Summed over classes.
  loss, m = _call('sigmoid_xent', student, _batch([1]))
  np.testing.assert_allclose(loss, math.log(2) + math.log(4 / 3), rtol=1e-6)
  np.testing.assert_allclose(m['sigmoid_xent'], loss)
  np.testing.assert_allclose(m['accuracy'], 1.0)


# ------------------------------------------------------------------ LiT

def test_contrastive_by_hand():
  ln2 = math.log(2)
  student = {'logits': jnp.array([[LN3, ln2], [0.0, 0.0]]), 't': jnp.float32(10.0)}
  # Rows (image -> text): softmax([ln3, ln2]) = [3/5, 2/5]; row 1 is [1/2, 1/2].
  # Columns (text -> image): col 0 = [3/4, 1/4]; col 1 = softmax([ln2, 0]) -> 1/3.
  i2t = [math.log(5 / 3), math.log(2)]
  t2i = [math.log(4 / 3), math.log(3)]
  expected = np.mean([(a + b) / 2 for a, b in zip(i2t, t2i)])
  loss, m = _call('contrastive', student, {})
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m['i2t_accuracy'], 0.5)  # row 1 is a tie -> index 0
  np.testing.assert_allclose(m['t2i_accuracy'], 0.5)  # col 1 [ln2, 0] -> image 0
  np.testing.assert_allclose(m['temperature'], 10.0)


def test_contrastive_mask_removes_padding_as_anchor_and_negative():
  ln2 = math.log(2)
  small = jnp.array([[LN3, ln2], [0.0, 0.0]])
  big = jnp.array([[LN3, ln2, 9.0], [0.0, 0.0, 9.0], [9.0, 9.0, 9.0]])
  expected, _ = _call('contrastive', {'logits': small}, {})
  loss, _ = _call('contrastive', {'logits': big},
                  {'mask': jnp.array([1.0, 1.0, 0.0])})
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  grads = jax.grad(lambda l: _call('contrastive', {'logits': l},
                                   {'mask': jnp.array([1.0, 1.0, 0.0])})[0])(big)
  assert np.isfinite(grads).all()
  np.testing.assert_array_equal(grads[2], 0.0)  # padding gets no gradient
  np.testing.assert_array_equal(grads[:, 2], 0.0)
  with pytest.raises(ValueError, match='square'):
    _call('contrastive', {'logits': jnp.zeros((2, 3))}, {})


# ------------------------------------------------------------------ distillation

def _kl_by_hand(t_logits, s_logits, temperature):
  p = np.exp(np.array(t_logits) / temperature)
  q = np.exp(np.array(s_logits) / temperature)
  p, q = p / p.sum(), q / q.sum()
  return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))


def test_kd_at_temperature_1_by_hand():
  # Teacher [3/4, 1/4], student [1/2, 1/2]: KL = 3/4 ln(3/2) + 1/4 ln(1/2).
  kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
  student, teacher = {'logits': jnp.zeros((1, 2))}, {'logits': jnp.array([[LN3, 0.0]])}
  loss, m = _call('kd', student, {}, teacher=teacher,
                  config=_config('kd', temperature=1.0, weight=1.0))
  np.testing.assert_allclose(loss, kl, rtol=1e-5)  # no labels needed at weight 1
  np.testing.assert_allclose(m['kd'], kl, rtol=1e-5)


def test_kd_mixes_t2_scaled_kl_with_hard_xent():
  temperature, alpha = 2.0, 0.7
  # Teacher at T=2: softmax([ln3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1).
  p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
  kl = p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)
  assert math.isclose(kl, _kl_by_hand([LN3, 0], [0, 0], 2.0), rel_tol=1e-12)
  xent = math.log(2)  # student [1/2, 1/2], label 0
  student, teacher = {'logits': jnp.zeros((1, 2))}, {'logits': jnp.array([[LN3, 0.0]])}
  loss, m = _call('kd', student, _batch([0]), teacher=teacher,
                  config=_config('kd', temperature=temperature, weight=alpha))
  np.testing.assert_allclose(loss, alpha * 4 * kl + (1 - alpha) * xent, rtol=1e-5)
  np.testing.assert_allclose(m['xent'], xent, rtol=1e-6)
  # argmax of a tie [0, 0] is class 0, which is also the teacher's argmax.
  np.testing.assert_allclose(m['agreement'], 1.0)


def test_kd_t2_keeps_gradient_scale_at_high_temperature():
  # For large T, d(T^2 KL)/dz_s -> ((z_s - mean z_s) - (z_t - mean z_t)) / C,
  # here (0 - [ln3/2, -ln3/2]) / 2 = [-ln3/4, ln3/4] whatever T is.
  teacher = {'logits': jnp.array([[LN3, 0.0]])}
  for temperature in (50.0, 200.0):
    config = _config('kd', temperature=temperature, weight=1.0)
    grad = jax.grad(lambda z: _call('kd', {'logits': z}, {}, teacher=teacher,
                                    config=config)[0])(jnp.zeros((1, 2)))
    np.testing.assert_allclose(grad[0], [-LN3 / 4, LN3 / 4], rtol=2e-2)


def test_kd_mask_and_errors():
  student = {'logits': jnp.array([[0.0, 0.0], [5.0, -5.0]])}
  teacher = {'logits': jnp.array([[LN3, 0.0], [-5.0, 5.0]])}
  config = _config('kd', temperature=1.0, weight=1.0)
  loss, _ = _call('kd', student, {'mask': jnp.array([1.0, 0.0])}, teacher=teacher,
                  config=config)
  np.testing.assert_allclose(loss, _kl_by_hand([LN3, 0], [0, 0], 1.0), rtol=1e-5)
  with pytest.raises(ValueError, match='no teacher'):
    _call('kd', student, {}, config=config)
  with pytest.raises(ValueError, match='labels'):  # the hard term needs labels
    _call('kd', student, {}, teacher=teacher, config=_config('kd', weight=0.5))
  with pytest.raises(ValueError, match='temperature'):
    _call('kd', student, {}, teacher=teacher, config=_config('kd', temperature=0.0))


def test_kd_does_not_train_the_teacher():
  config = _config('kd', temperature=2.0, weight=0.5)
  def loss_of_teacher(t):
    return _call('kd', {'logits': jnp.zeros((1, 2))}, _batch([0]),
                 teacher={'logits': t}, config=config)[0]
  np.testing.assert_array_equal(jax.grad(loss_of_teacher)(jnp.ones((1, 2))), 0.0)


def test_deit_by_hand():
  student = {'logits': jnp.array([[0.0, LN3]]), 'dist_logits': jnp.array([[1.0, 0.0]])}
  teacher = {'logits': jnp.array([[5.0, 1.0]])}  # teacher's hard label: class 0
  # Class head vs label 1: -log(3/4). Distillation head vs class 0:
  # -log(e / (e + 1)) = log(1 + e^-1).
  xent, dist_xent = math.log(4 / 3), math.log(1 + math.exp(-1))
  loss, m = _call('deit', student, _batch([1]), teacher=teacher)
  np.testing.assert_allclose(loss, (xent + dist_xent) / 2, rtol=1e-6)
  np.testing.assert_allclose(m['dist_xent'], dist_xent, rtol=1e-6)
  # Averaged heads: [0.5, ln3 / 2 = 0.549] -> class 1, correct.
  np.testing.assert_allclose(m['accuracy'], 1.0)
  np.testing.assert_allclose(m['agreement'], 1.0)
  with pytest.raises(ValueError, match='distill_token'):
    _call('deit', {'logits': student['logits']}, _batch([1]), teacher=teacher)


# ------------------------------------------------------------------ features

def _feature_outputs():
  student = {'logits': jnp.zeros((1, 2)),
             'intermediates': {'s1': jnp.array([[[1.0, 0.0], [0.0, 1.0]]])}}
  teacher = {'logits': jnp.zeros((1, 2)),
             'intermediates': {'t3': jnp.array([[[1.0, 1.0], [0.0, 2.0]]])}}
  return student, teacher


@pytest.mark.parametrize('distance', ['l2', 'cosine'])
def test_feature_loss_by_hand(distance):
  student, teacher = _feature_outputs()
  config = _config('feature', feature_pairs=(('s1', 't3'),),
                   feature_distance=distance, feature_weight=0.5)
  # l2: squared differences [0, 1, 0, 1], mean 0.5.
  # cosine: token 0 cos([1,0], [1,1]) = 1/sqrt2, token 1 cos = 1; mean of 1 - cos.
  expected = {'l2': 0.5, 'cosine': (1 - 1 / math.sqrt(2)) / 2}[distance]
  assert losses.init_loss_params(config, jax.random.key(0), student, teacher) == {}
  loss, m = _call('feature', student, _batch([0]), teacher=teacher, config=config)
  np.testing.assert_allclose(m['feature'], expected, rtol=1e-6)
  np.testing.assert_allclose(loss, math.log(2) + 0.5 * expected, rtol=1e-6)


def test_feature_projection_when_widths_differ():
  student = {'logits': jnp.zeros((1, 2)),
             'intermediates': {'s': jnp.array([[[1.0, 2.0, 3.0]]])}}
  teacher = {'logits': jnp.zeros((1, 2)),
             'intermediates': {'t': jnp.array([[[4.0, 5.0]]])}}
  config = _config('feature', feature_pairs=(('s', 't'),))
  shapes = jax.eval_shape(lambda: (student, teacher))
  params = losses.init_loss_params(config, jax.random.key(0), *shapes)
  assert params['proj_0']['kernel'].shape == (3, 2)
  assert params['proj_0']['bias'].shape == (2,)
  # [1, 2, 3] @ [[1, 0], [0, 1], [1, 1]] = [4, 5]: exactly the teacher.
  exact = {'proj_0': {'kernel': jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                      'bias': jnp.zeros(2)}}
  _, m = _call('feature', student, _batch([0]), teacher=teacher,
               loss_params=exact, config=config)
  np.testing.assert_allclose(m['feature'], 0.0, atol=1e-7)
  # The projection is trained by the loss: it gets a gradient.
  grads = jax.grad(lambda lp: _call('feature', student, _batch([0]), teacher=teacher,
                                    loss_params=lp, config=config)[0])(params)
  assert float(jnp.abs(grads['proj_0']['kernel']).sum()) > 0


def test_feature_errors_name_the_problem():
  student, teacher = _feature_outputs()
  config = _config('feature', feature_pairs=(('s1', 'missing'),))
  with pytest.raises(ValueError, match=r"'missing'.*\['t3'\]"):
    _call('feature', student, _batch([0]), teacher=teacher, config=config)
  with pytest.raises(ValueError, match='feature_pairs'):
    _call('feature', student, _batch([0]), teacher=teacher, config=_config('feature'))


# ------------------------------------------------------------------ registry and config

def test_unknown_loss_name_lists_known_ones():
  with pytest.raises(UnknownNameError, match="Did you mean 'kd'"):
    losses.LOSSES.get('kdd')
  with pytest.raises(UnknownNameError, match='softmax_xent'):
    losses.init_loss_params(_config('softmax_xnet'), jax.random.key(0), {}, None)
  assert set(losses.LOSSES.names()) == {
      'softmax_xent', 'sigmoid_xent', 'contrastive', 'kd', 'deit', 'feature'}


def test_distill_config_catches_misspelled_keys():
  config = _config('kd')
  config.distill.temprature = 2.0
  with pytest.raises(ValueError, match="Did you mean 'temperature'"):
    _call('kd', {'logits': jnp.zeros((1, 2))}, {},
          teacher={'logits': jnp.zeros((1, 2))}, config=complete_sections(config))


def test_compute_dispatches_on_config_loss_and_needs_teacher():
  config = _config('softmax_xent')
  loss, _ = losses.compute(config, {'logits': jnp.array([[0.0, LN3]])}, _batch([1]))
  np.testing.assert_allclose(loss, math.log(4 / 3), rtol=1e-6)
  assert not losses.needs_teacher(config)
  assert losses.needs_teacher(_config('deit'))


def test_losses_jit():
  student, teacher = {'logits': jnp.array([[0.0, LN3]])}, {'logits': jnp.array([[LN3, 0.0]])}
  config = _config('kd', temperature=2.0, weight=0.5)
  fn = jax.jit(lambda s, t, b: losses.compute(config, s, b, teacher=t))
  loss, metrics = fn(student, teacher, _batch([1]))
  eager, _ = losses.compute(config, student, _batch([1]), teacher=teacher)
  np.testing.assert_allclose(loss, eager, rtol=1e-6)
  assert set(metrics) == {'kd', 'xent', 'accuracy', 'agreement'}
