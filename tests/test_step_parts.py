"""The train step's parts, each on its own: the pruning hooks, a loss that owns
its parameters, gradient accumulation, and the model-family adapters."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vit_compress import config_sections
from vit_compress import evaluation
from vit_compress import losses
from vit_compress import models
from vit_compress import train
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import structure
from vit_compress.models import families
from vit_compress.registry import UnknownNameError


# ------------------------------------------------------------------ pruning
def _tiny_params():
  """One prunable 4x4 kernel (|w| = 1..16) and a bias the default regex skips."""
  kernel = jnp.arange(1.0, 17.0).reshape(4, 4) * jnp.where(
      jnp.arange(16).reshape(4, 4) % 2 == 0, 1.0, -1.0)
  return {'encoderblock_0': {'Dense_0': {'kernel': kernel, 'bias': jnp.ones(4)}}}


def _prune_config(**overrides):
  config = pruning.default_config()
  config.update(method='magnitude', sparsity=0.5, begin_step=2, **overrides)
  return config


def test_no_pruning_part_changes_nothing():
  part = pruning.make(pruning.default_config())   # method 'none'
  assert type(part) is pruning.NoPruning
  params = _tiny_params()
  assert part.init(params) == {}
  state = {'params': params, 'step': jnp.int32(2)}
  out, entries = part.before_step(state)
  assert out is params and entries == {}
  updates = jax.tree.map(jnp.ones_like, params)
  new_updates, entries = part.after_grads({}, params, updates, updates)
  assert new_updates is updates and entries == {}


def test_pruner_hooks_mask_the_smallest_half_and_its_updates():
  part = pruning.make(_prune_config())
  assert isinstance(part, pruning.Pruner)
  params = _tiny_params()
  state = dict(part.init(params), params=params)
  assert sorted(state) == ['masks', 'params']   # no Taylor scores for magnitude
  np.testing.assert_array_equal(state['masks']['encoderblock_0']['Dense_0']['kernel'],
                                np.ones((4, 4)))
  assert state['masks']['encoderblock_0']['Dense_0']['bias'].shape == ()

  # Off the schedule (step 1 < begin_step 2): nothing is pruned yet.
  same, entries = part.before_step(dict(state, step=jnp.int32(1)))
  np.testing.assert_array_equal(same['encoderblock_0']['Dense_0']['kernel'],
                                params['encoderblock_0']['Dense_0']['kernel'])
  # At begin_step: the 8 weights with |w| <= 8 are zero, the rest as they were.
  masked, entries = jax.jit(part.before_step)(dict(state, step=jnp.int32(2)))
  kernel = np.asarray(params['encoderblock_0']['Dense_0']['kernel'])
  expected = np.where(np.abs(kernel) > 8, kernel, 0.0)
  np.testing.assert_array_equal(masked['encoderblock_0']['Dense_0']['kernel'], expected)
  np.testing.assert_array_equal(entries['masks']['encoderblock_0']['Dense_0']['kernel'],
                                (np.abs(kernel) > 8).astype(np.float32))
  # after_grads: the pruned entries of the updates are zero, the others kept.
  updates = jax.tree.map(lambda x: jnp.full(x.shape, 0.5), params)
  new_updates, after = part.after_grads(entries, masked, updates, updates)
  np.testing.assert_array_equal(new_updates['encoderblock_0']['Dense_0']['kernel'],
                                0.5 * (np.abs(kernel) > 8))
  np.testing.assert_array_equal(new_updates['encoderblock_0']['Dense_0']['bias'],
                                np.full(4, 0.5))
  assert sorted(after) == ['masks']
  # The state's parameters with its masks: what evaluation and saving use.
  np.testing.assert_array_equal(
      pruning.masked_params(dict(state, **after))['encoderblock_0']['Dense_0']['kernel'],
      expected)
  assert pruning.masked_params({'params': params}) is params


def test_taylor_pruner_accumulates_abs_w_times_g():
  part = pruning.make(_prune_config(criterion='taylor'))
  params = _tiny_params()
  entries = part.init(params)
  assert sorted(entries) == ['masks', 'scores']
  state = dict(entries, params=params, step=jnp.int32(0))   # before begin_step
  masked, entries = part.before_step(state)
  grads = jax.tree.map(lambda x: jnp.full(x.shape, -2.0), params)
  _, after = part.after_grads(entries, masked, grads, grads)
  kernel = np.asarray(params['encoderblock_0']['Dense_0']['kernel'])
  np.testing.assert_allclose(after['scores']['encoderblock_0']['Dense_0']['kernel'],
                             2.0 * np.abs(kernel))
  # Twice: summed.
  _, again = part.after_grads(after, masked, grads, grads)
  np.testing.assert_allclose(again['scores']['encoderblock_0']['Dense_0']['kernel'],
                             4.0 * np.abs(kernel))


# ------------------------------------------------------------------ a loss's parameters
def _feature_config(loss='feature'):
  return ml_collections.ConfigDict({
      'loss': loss,
      'distill': config_sections.complete_section(
          'distill', {'feature_pairs': (('s', 't'),)})})


def _feature_outputs():
  student = {'logits': jnp.array([[0.0, 1.0]]),
             'intermediates': {'s': jnp.array([[[1.0, 2.0, 3.0]]])}}
  teacher = {'logits': jnp.array([[1.0, 0.0]]),
             'intermediates': {'t': jnp.array([[[4.0, 5.0]]])}}
  return student, teacher


def test_feature_loss_owns_its_projection_and_trains_it():
  tx = optax.sgd(0.1)
  loss = losses.StepLoss(_feature_config(), tx)
  assert (loss.student_capture, loss.teacher_capture) == (('s',), ('t',))
  student, teacher = _feature_outputs()
  entries = loss.init(jax.random.key(0), student, teacher)
  assert sorted(entries) == ['loss_opt_state', 'loss_params']
  assert entries['loss_params']['proj_0']['kernel'].shape == (3, 2)
  batch = {'label': jnp.array([1])}
  value, metrics = loss(student, batch, teacher, loss.params(entries))
  np.testing.assert_allclose(value, metrics['xent'] + metrics['feature'], rtol=1e-6)
  grads = jax.grad(lambda p: loss(student, batch, teacher, p)[0])(loss.params(entries))
  new = loss.update(entries, grads)
  # One SGD step on the projection: params - 0.1 * grads, exactly.
  np.testing.assert_allclose(
      new['loss_params']['proj_0']['kernel'],
      entries['loss_params']['proj_0']['kernel'] - 0.1 * grads['proj_0']['kernel'],
      rtol=1e-6)
  after, _ = loss(student, batch, teacher, new['loss_params'])
  assert float(after) < float(value)
  assert not losses.compares_teacher_classes(_feature_config())


def test_a_loss_without_parameters_adds_nothing_to_the_state():
  loss = losses.StepLoss(_feature_config('kd'), optax.sgd(0.1))
  assert (loss.student_capture, loss.teacher_capture) == ((), ())
  student, teacher = _feature_outputs()
  assert loss.init(jax.random.key(0), student, teacher) == {}
  state = {'params': {}}
  assert loss.params(state) == {}
  assert loss.update(state, {}) == {}
  assert losses.compares_teacher_classes(_feature_config('kd'))
  with pytest.raises(UnknownNameError, match="Did you mean 'kd'"):
    losses.StepLoss(_feature_config('kdd'), optax.sgd(0.1)).init(
        jax.random.key(0), student, teacher)


# ------------------------------------------------------------------ accumulation
def test_accumulated_gradients_are_the_big_batch_mean():
  w = jnp.array([0.5, -1.0, 2.0])

  def grad_fn(w, batch, rng):
    del rng
    return jax.value_and_grad(
        lambda w: jnp.mean((batch['x'] @ w - batch['y']) ** 2))(w)

  rng = np.random.default_rng(0)
  batch = {'x': jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           'y': jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
  assert train.accumulate_gradients(grad_fn, 1) is grad_fn
  full = grad_fn(w, batch, None)
  split = jax.jit(train.accumulate_gradients(grad_fn, 4))(w, batch, jax.random.key(0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), full, split)


# ------------------------------------------------------------------ families
def test_every_model_family_has_one_adapter():
  assert families.FAMILIES.names() == models.MODELS.names()
  for name in families.FAMILIES.names():
    assert families.get(name).eval_kind in evaluation.EVAL_KINDS
  with pytest.raises(UnknownNameError, match="Unknown model family 'vti'"):
    families.get('vti')


@pytest.mark.parametrize('name, tokens', [('Nano_2', None), ('LiT_Nano', 'tokens'),
                                          ('Mixer_Nano_2', None)])
def test_adapter_inputs_fit_the_model(name, tokens):
  config = zoo.get(name)
  family = families.of(config)
  inputs = family.example_inputs(config, 2, 16)
  assert sorted(inputs) == sorted(['images'] + ([tokens] if tokens else []))
  assert inputs['images'].shape == (2, 16, 16, 3)
  batch = {'image': inputs['images'], 'tokens': jnp.zeros((2, 4), jnp.int32),
           'label': jnp.zeros(2, jnp.int32)}
  assert sorted(family.inputs(batch)) == sorted(inputs)
  assert sorted(train.model_inputs(config, batch)) == sorted(inputs)
  # The adapter's inputs are what the model's call takes.
  shapes = jax.eval_shape(lambda: models.build(config).init(
      jax.random.key(0), **family.example_inputs(config, 1)))
  assert 'params' in shapes


def test_adapter_decisions_per_family():
  lit, vit = zoo.get('LiT_Nano'), zoo.get('Nano_2')
  assert families.of(lit).eval_kind == 'zero_shot'
  assert not families.of(lit).class_head and families.of(vit).class_head
  assert families.of(lit).image_config(lit) is lit.image
  assert families.of(vit).image_config(vit) is vit
  assert families.of(lit).image_config_key() == 'config.model.image'
  # Tokens: a ViT's posembed length (grid + class token), LiT's image tower's.
  grid = (vit.image_size // vit.patches.size[0]) ** 2
  assert families.of(vit).num_tokens(vit, models.param_shapes(vit)) == grid + 1
  lit_grid = (lit.image.image_size // lit.image.patches.size[0]) ** 2
  assert families.of(lit).num_tokens(lit, models.param_shapes(lit)) == lit_grid + 1
  # Encoders: what structured pruning and shrink work on.
  assert structure.encoders(vit) == families.of(vit).encoders(vit)
  assert [e[0] for e in structure.encoders(vit)] == ['Transformer']
  assert structure.encoders(lit) == []
  assert families.can_shrink(vit) and families.can_shrink(zoo.get('MobileViT_XXS'))
  assert not families.can_shrink(lit) and not families.can_shrink({'family': 'x'})


def test_transform_and_export_decisions_per_family():
  vit, lit = zoo.get('Nano_2'), zoo.get('LiT_Nano')
  mobilevit, mixer = zoo.get('MobileViT_XXS'), zoo.get('Mixer_B_16')
  by_name = {name: families.get(name) for name in families.FAMILIES.names()}
  # Only ViT merges tokens, factorises low-rank and is shrunk on export.
  for field in ('token_merging', 'lowrank', 'export_shrinks'):
    assert [n for n, f in by_name.items() if getattr(f, field)] == ['vit'], field
  # Only MobileViT records shrunk widths per layer at the top of its config.
  assert [n for n, f in by_name.items() if f.layer_widths] == ['mobilevit']
  # Only LiT is zero-shot: text inputs, no class head, zero-shot eval.
  assert [n for n, f in by_name.items() if f.zero_shot] == ['lit']
  assert families.of(lit).text_inputs and not families.of(mixer).text_inputs
  assert families.of(mobilevit).class_head
  # A config of no registered family reads every field's default.
  for config in ({'family': 'x'}, {}):
    plain = families.lookup(config)
    assert plain is families.PLAIN and plain.class_head and not plain.zero_shot
    assert not (plain.token_merging or plain.lowrank or plain.export_shrinks)
  assert families.lookup(vit) is families.of(vit)
