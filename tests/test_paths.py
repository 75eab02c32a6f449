"""Tests for vit_compress.param_paths: '/'-joined parameter paths and regex selection."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo


def _tree():
  return {'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros((3,))},
          'Transformer': {'encoderblock_0': {'LayerNorm_0': {'scale': jnp.ones(2)}}},
          'cls': jnp.zeros((1, 1, 2)), 'layers': [jnp.ones(1), jnp.ones(2)]}


def test_flatten_with_paths_uses_slash_joined_names_in_leaf_order():
  flat = param_paths.flatten_with_paths(_tree())
  assert [p for p, _ in flat] == [
      'Transformer/encoderblock_0/LayerNorm_0/scale', 'cls', 'head/bias',
      'head/kernel', 'layers/0', 'layers/1']
  assert [x.shape for _, x in flat] == [
      x.shape for x in jax.tree_util.tree_leaves(_tree())]
  assert param_paths.path_names(_tree()) == [p for p, _ in flat]


def test_match_selects_by_regex_search():
  mask = param_paths.match(_tree(), r'kernel$|^cls')
  assert mask['head']['kernel'] and mask['cls']
  assert not mask['head']['bias']
  assert not mask['Transformer']['encoderblock_0']['LayerNorm_0']['scale']
  assert param_paths.regex_mask is param_paths.match
  assert param_paths.matching_paths(_tree(), 'LayerNorm') == [
      'Transformer/encoderblock_0/LayerNorm_0/scale']


def test_match_on_shape_structs_of_a_real_model():
  shapes = models.param_shapes(zoo.get('Nano_2'))
  mask = param_paths.match(shapes, r'MultiHeadDotProductAttention_0/query/kernel$')
  assert sum(jax.tree_util.tree_leaves(mask)) == 2  # one per layer of Nano_2


def test_require_match_error_names_regex_and_real_paths():
  with pytest.raises(ValueError) as e:
    param_paths.require_match(_tree(), '^img/', 'config.optim.frozen')
  msg = str(e.value)
  assert "'^img/'" in msg and 'config.optim.frozen' in msg and 'head/kernel' in msg
  assert param_paths.require_match(_tree(), 'bias', 'x') == ['head/bias']


def test_bad_regex_is_a_clear_error():
  with pytest.raises(ValueError, match='not a valid regular expression'):
    param_paths.match(_tree(), '(')


def test_tree_from_flat_round_trips_both_ways():
  tree = _tree()
  flat = dict(param_paths.flatten_with_paths(tree))
  rebuilt = param_paths.tree_from_flat(flat, like=tree)
  assert jax.tree_util.tree_structure(rebuilt) == jax.tree_util.tree_structure(tree)
  nested = param_paths.tree_from_flat({k: v for k, v in flat.items() if 'layers' not in k})
  np.testing.assert_array_equal(nested['head']['kernel'], tree['head']['kernel'])
  assert set(nested) == {'head', 'Transformer', 'cls'}
  with pytest.raises(KeyError, match='head/bias'):
    param_paths.tree_from_flat({'head/kernel': 1}, like={'head': {'kernel': 0, 'bias': 0}})
  with pytest.raises(ValueError, match='goes through a leaf'):
    param_paths.tree_from_flat({'a': 1, 'a/b': 2})


def test_map_with_paths_passes_paths():
  doubled = param_paths.map_with_paths(
      lambda p, x: x * 2 if p.startswith('head/') else x, _tree())
  np.testing.assert_array_equal(doubled['head']['kernel'], 2 * np.ones((2, 3)))
  np.testing.assert_array_equal(doubled['cls'], np.zeros((1, 1, 2)))
