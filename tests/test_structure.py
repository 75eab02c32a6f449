"""Structural groups derived from the model, structured pruning, and shrink."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_compress import checkpoint
from tests.helpers.params import random_params
from tests.helpers.pruning_helpers import prune_config
from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import structure

ATT = 'MultiHeadDotProductAttention_0'


def _prune(params, **kw):
  config = prune_config(**kw)
  return pruning.update_masks(params, pruning.init_masks(params, config), 0, config)


def _flat(tree):
  return {k: np.array(v) for k, v in structure.flatten(tree)[0].items()}


def _edit(params, fn):
  """A copy of `params` with fn(flat numpy dict) applied in place."""
  flat = _flat(params)
  fn(flat)
  return param_paths.tree_from_flat({k: jnp.asarray(v) for k, v in flat.items()}, like=params)


def _logits(config, params, images):
  return jax.jit(lambda p, x: models.build(config).apply({'params': p}, x))(params, images)


def _images(config, n=4):
  s = config.image_size
  return jax.random.normal(jax.random.key(7), (n, s, s, 3))


def _head_slices(flat, block, h):
  """The test's own list of one head's slices: (path, array slice) pairs."""
  att = f'{block}/{ATT}'
  out = [(f'{att}/{n}/kernel', flat[f'{att}/{n}/kernel'][:, h]) for n in ('query', 'key', 'value')]
  out += [(f'{att}/{n}/bias', flat[f'{att}/{n}/bias'][h]) for n in ('query', 'key', 'value')]
  return out + [(f'{att}/out/kernel', flat[f'{att}/out/kernel'][h])]


@pytest.mark.parametrize('name', ['Nano_2', 'R_Nano_2'])
def test_groups_are_derived_from_the_parameter_tree(name):
  config = zoo.get(name)
  params = models.param_shapes(config)
  families = structure.find_groups(params, config)
  t = config.transformer
  assert [f.kind for f in families] == ['head', 'neuron', 'layer'] * t.num_layers
  flat, _ = structure.flatten(params)  # ShapeDtypeStructs: groups need only shapes
  for f in families:
    if f.kind == 'head':
      assert f.size == t.num_heads
      assert len(f.members) == 7  # q, k, v kernels and biases, out kernel
    elif f.kind == 'neuron':
      assert f.size == t.mlp_dim
      assert dict(f.members) == {f'{f.block}/MlpBlock_0/Dense_0/kernel': 1,
                                 f'{f.block}/MlpBlock_0/Dense_0/bias': 0,
                                 f'{f.block}/MlpBlock_0/Dense_1/kernel': 0}
    else:
      assert {p for p, _ in f.members} == {p for p in flat if p.startswith(f.block + '/')}
    for p, axis in f.members:
      if axis is not None:
        assert flat[p].shape[axis] == f.size
  with pytest.raises(ValueError, match='transformer.num_layers=4'):
    structure.find_groups(params, zoo.get('Micro_2'))


def test_head_pruning_removes_the_weakest_head_and_all_its_slices():
  params = random_params('Nano_2')
  block = 'Transformer/encoderblock_0'

  def weaken_head_1(flat):
    for path, _ in _head_slices(flat, block, 1):
      if 'kernel' in path and 'out' not in path:
        flat[path][:, 1] *= 0.01
      else:
        flat[path][1] *= 0.01

  params = _edit(params, weaken_head_1)
  masks = _flat(_prune(params, method='heads', sparsity=0.5))
  assert all(np.all(s == 0) for _, s in _head_slices(masks, block, 1))
  assert all(np.all(s == 1) for _, s in _head_slices(masks, block, 0))
  assert masks[f'{block}/{ATT}/out/bias'].shape == ()  # shared by all heads: kept
  other = 'Transformer/encoderblock_1'
  kept = [all(np.all(s == 1) for _, s in _head_slices(masks, other, h)) for h in (0, 1)]
  assert sorted(kept) == [False, True]
  # 90 % of two heads still keeps one per layer.
  masks = _prune(params, method='heads', sparsity=0.9)
  assert [e['heads'] for e in structure.summary(params, masks).values()] == [1, 1]


def test_neuron_pruning_keeps_the_neurons_with_largest_sum_of_squares():
  params = random_params('Nano_2')
  masks = _flat(_prune(params, method='neurons', sparsity=0.25))
  flat = _flat(params)
  mlp = 'Transformer/encoderblock_1/MlpBlock_0'
  importance = (np.sum(flat[f'{mlp}/Dense_0/kernel'] ** 2, 0) + flat[f'{mlp}/Dense_0/bias'] ** 2
                + np.sum(flat[f'{mlp}/Dense_1/kernel'] ** 2, 1))
  kept = masks[f'{mlp}/Dense_1/kernel'][:, 0] == 1
  assert kept.sum() == 128 - 32
  assert importance[~kept].max() <= importance[kept].min()
  np.testing.assert_array_equal(masks[f'{mlp}/Dense_0/kernel'], np.broadcast_to(kept, (32, 128)))
  np.testing.assert_array_equal(masks[f'{mlp}/Dense_0/bias'], kept)


def test_global_scope_ranks_heads_across_layers_but_keeps_one_per_layer():
  params = random_params('Micro_2')

  def weaken_layer_0(flat):
    for path in flat:
      if path.startswith(f'Transformer/encoderblock_0/{ATT}/'):
        flat[path] *= 0.01

  params = _edit(params, weaken_layer_0)
  heads = lambda m: [e['heads'] for e in structure.summary(params, m).values()]
  per_layer = heads(_prune(params, method='heads', sparsity=0.5))
  assert per_layer == [2, 2, 2, 2]
  global_ = heads(_prune(params, method='heads', sparsity=0.5, scope='global'))
  assert global_[0] == 1 and sum(global_) == 16 - 8 and min(global_) >= 1


def _removed_params(params, kept_heads, kept_neurons, config):
  """Parameters that 50 % head and neuron pruning removes, from the layer shapes."""
  d, t = config.hidden_size, config.transformer
  dh = d // t.num_heads
  per_head = 3 * (d * dh + dh) + dh * d   # q, k, v kernels + biases, out kernel
  per_neuron = d + 1 + d                  # Dense_0 column + bias, Dense_1 row
  return t.num_layers * ((t.num_heads - kept_heads) * per_head +
                         (t.mlp_dim - kept_neurons) * per_neuron)


def test_shrink_half_the_heads_and_neurons_matches_the_masked_model(tmp_path):
  config = zoo.get('Micro_2')  # 4 layers, 4 heads of 16, MLP 256, width 64
  params = random_params('Micro_2')
  masks = _prune(params, method='heads_and_neurons', sparsity=0.5)
  new_params, new_config = structure.shrink(params, masks, config)

  t = new_config.transformer
  assert t.num_heads == (2,) * 4 and t.mlp_dim == (128,) * 4 and t.head_dim == 16
  assert t.num_layers == 4 and config.transformer.num_heads == 4  # original untouched
  flat = _flat(new_params)
  for i in range(4):
    b = f'Transformer/encoderblock_{i}'
    assert flat[f'{b}/{ATT}/query/kernel'].shape == (64, 2, 16)
    assert flat[f'{b}/{ATT}/value/bias'].shape == (2, 16)
    assert flat[f'{b}/{ATT}/out/kernel'].shape == (2, 16, 64)
    assert flat[f'{b}/{ATT}/out/bias'].shape == (64,)
    assert flat[f'{b}/MlpBlock_0/Dense_0/kernel'].shape == (64, 128)
    assert flat[f'{b}/MlpBlock_0/Dense_1/kernel'].shape == (128, 64)
  assert (models.count_params(params) - models.count_params(new_params) ==
          _removed_params(params, 2, 128, config))
  images = _images(config)
  masked = _logits(config, pruning.apply_masks(params, masks), images)
  shrunk = _logits(new_config, new_params, images)
  assert float(jnp.std(masked)) > 0.1  # not trivially equal
  np.testing.assert_allclose(shrunk, masked, atol=1e-5, rtol=1e-5)

  # Reloadable from its own config alone: through JSON, and as a saved model.
  from_json = ml_collections.ConfigDict(json.loads(new_config.to_json()))
  np.testing.assert_allclose(_logits(from_json, new_params, images), masked,
                             atol=1e-5, rtol=1e-5)
  directory = os.fspath(tmp_path / 'shrunk')
  checkpoint.save_model(directory, new_params, new_config)
  loaded_config, loaded_params = checkpoint.load_model(directory)
  assert loaded_config.transformer.num_heads == (2,) * 4
  np.testing.assert_allclose(_logits(loaded_config, loaded_params, images), masked,
                             atol=1e-5, rtol=1e-5)


def test_layer_pruning_drops_and_renumbers_blocks():
  config = zoo.get('Micro_2')
  params = random_params('Micro_2')
  masks = _prune(params, method='layers', sparsity=0.5)
  flat_p, flat_m = _flat(params), _flat(masks)
  energy = [sum(np.sum(v ** 2) for k, v in flat_p.items()
                if k.startswith(f'Transformer/encoderblock_{i}/')) for i in range(4)]
  kept = sorted(np.argsort(energy)[2:])
  for i in range(4):
    block = [v for k, v in flat_m.items() if k.startswith(f'Transformer/encoderblock_{i}/')]
    assert all(np.all(m == (1 if i in kept else 0)) for m in block)

  new_params, new_config = structure.shrink(params, masks, config)
  assert new_config.transformer.num_layers == 2
  assert new_config.transformer.num_heads == (4, 4)
  new_flat = _flat(new_params)
  assert sorted({k.split('/')[1] for k in new_flat if 'encoderblock' in k}) == [
      'encoderblock_0', 'encoderblock_1']
  for j, i in enumerate(kept):
    key = f'{ATT}/query/kernel'
    np.testing.assert_array_equal(new_flat[f'Transformer/encoderblock_{j}/{key}'],
                                  flat_p[f'Transformer/encoderblock_{i}/{key}'])
  images = _images(config)
  np.testing.assert_allclose(_logits(new_config, new_params, images),
                             _logits(config, pruning.apply_masks(params, masks), images),
                             atol=1e-5, rtol=1e-5)


def test_shrink_keeps_one_zero_head_when_a_layer_loses_all_its_heads():
  config = zoo.get('Nano_2')
  params = random_params('Nano_2')
  masks = pruning.init_masks(params, prune_config(method='heads'))

  def drop_all_heads_of_layer_0(flat):
    for path in flat:
      if path.startswith(f'Transformer/encoderblock_0/{ATT}/') and flat[path].shape:
        flat[path][...] = 0

  masks = _edit(masks, drop_all_heads_of_layer_0)
  new_params, new_config = structure.shrink(params, masks, config)
  assert new_config.transformer.num_heads == (1, 2)
  att = _flat(new_params)
  assert np.all(att[f'Transformer/encoderblock_0/{ATT}/out/kernel'] == 0)
  images = _images(config)
  np.testing.assert_allclose(_logits(new_config, new_params, images),
                             _logits(config, pruning.apply_masks(params, masks), images),
                             atol=1e-5, rtol=1e-5)


def test_shrink_hybrid_by_taylor_scores():
  config = zoo.get('R_Nano_2')
  params = random_params('R_Nano_2')
  prune = prune_config(method='heads_and_neurons', criterion='taylor', sparsity=0.5)
  grads = random_params('R_Nano_2', seed=1)  # stand-ins: test_pruning checks real ones
  scores = pruning.accumulate_taylor(pruning.init_scores(params, prune), params, grads)
  masks = pruning.update_masks(params, pruning.init_masks(params, prune), 0, prune, scores)
  new_params, new_config = structure.shrink(params, masks, config)
  assert new_config.transformer.num_heads == (1, 1)
  assert new_config.transformer.mlp_dim == (64, 64)
  assert 'conv_root' in new_params  # the ResNet stem is carried over
  images = _images(config)
  np.testing.assert_allclose(_logits(new_config, new_params, images),
                             _logits(config, pruning.apply_masks(params, masks), images),
                             atol=1e-5, rtol=1e-5)


def test_shrink_rejects_what_it_cannot_shrink():
  mixer = zoo.get('Mixer_Nano_2')
  with pytest.raises(ValueError, match='family "vit"'):
    structure.shrink({}, {}, mixer)
  with pytest.raises(ValueError, match='no .* groups'):
    pruning.init_masks(models.param_shapes(mixer), prune_config(method='heads'))


def test_n_m_groups_run_along_the_input_axes():
  assert structure.input_axes(f'a/{ATT}/query/kernel', 3) == 1
  assert structure.input_axes(f'a/{ATT}/out/kernel', 3) == 2
  assert structure.input_axes('a/Dense_0/kernel', 2) == 1
  assert structure.input_axes('embedding/kernel', 4) == 3
