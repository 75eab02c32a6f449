"""MobileViT: timm's exact parameter counts, the timm state-dict import, BatchNorm."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from vit_compress import checkpoint
from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo
from vit_compress.models import batch_norm
from vit_compress.models import mobilevit

FIXTURE = os.path.join(os.path.dirname(__file__), 'data',
                       'timm_mobilevit_xxs_keys.json')


@pytest.mark.parametrize('name,count', [('MobileViT_XXS', 1_272_024),
                                        ('MobileViT_XS', 2_317_848),
                                        ('MobileViT_S', 5_578_632)])
def test_parameter_counts_equal_timm(name, count):
  config = zoo.get(name)
  assert (config.image_size, config.num_classes) == (256, 1000)
  shapes = models.param_shapes(config)  # jax.eval_shape: no weights allocated
  assert models.count_params(shapes) == count
  # The running statistics exist but are buffers, as in PyTorch.
  stats = [p for p in param_paths.path_names(shapes) if 'running_' in p]
  assert stats and all(p.endswith(('running_mean', 'running_var')) for p in stats)


def _random_timm_file(tmp_path):
  with open(FIXTURE) as f:
    shapes = json.load(f)['shapes']
  rng = np.random.default_rng(0)
  state = {k: (np.array(7, np.int64) if k.endswith('num_batches_tracked')
               else rng.standard_normal(v).astype(np.float32))
           for k, v in shapes.items()}
  path = str(tmp_path / 'mobilevit_xxs.safetensors')
  save_file(state, path)
  return state, path


def test_timm_state_dict_import_covers_every_key(tmp_path):
  state, path = _random_timm_file(tmp_path)
  config = zoo.get('MobileViT_XXS')
  params = checkpoint.load_timm(path, config)
  flat = dict(param_paths.flatten_with_paths(params))
  want = dict(param_paths.flatten_with_paths(models.param_shapes(config)))
  assert {k: v.shape for k, v in flat.items()} == {k: v.shape for k, v in want.items()}
  # Every timm value lands exactly once: same multiset of numbers.
  weights = [v for k, v in state.items() if not k.endswith('num_batches_tracked')]
  assert sum(v.size for v in weights) == sum(v.size for v in flat.values())
  np.testing.assert_array_equal(
      np.sort(np.concatenate([v.ravel() for v in weights])),
      np.sort(np.concatenate([np.asarray(v).ravel() for v in flat.values()])))
  # The layouts: OIHW -> HWIO, depthwise, BN, qkv split into heads, proj.
  blk = 'stages_2_1/Transformer/encoderblock_0/MultiHeadDotProductAttention_0'
  np.testing.assert_array_equal(flat['stem/conv/kernel'],
                                state['stem.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      flat['stages_1_0/conv2_kxk/conv/kernel'][:, :, 0, 5],
      state['stages.1.0.conv2_kxk.conv.weight'][5, 0])
  np.testing.assert_array_equal(flat['final_conv/bn/scale'],
                                state['final_conv.bn.weight'])
  np.testing.assert_array_equal(flat['final_conv/bn/running_var'],
                                state['final_conv.bn.running_var'])
  qkv_w = state['stages.2.1.transformer.0.attn.qkv.weight']  # (3 * 64, 64)
  qkv_b = state['stages.2.1.transformer.0.attn.qkv.bias']
  # key, head 2, channel 3 of 16 is timm's output row 64 + 2 * 16 + 3.
  np.testing.assert_array_equal(flat[f'{blk}/key/kernel'][:, 2, 3], qkv_w[99])
  assert flat[f'{blk}/value/bias'][3, 15] == qkv_b[128 + 63]
  proj = state['stages.2.1.transformer.0.attn.proj.weight']
  np.testing.assert_array_equal(flat[f'{blk}/out/kernel'][1, 4], proj[:, 20])
  np.testing.assert_array_equal(flat['head/kernel'], state['head.fc.weight'].T)


def test_timm_import_names_what_does_not_fit(tmp_path):
  _, path = _random_timm_file(tmp_path)
  with pytest.raises(ValueError, match='MobileViT_XS.*shape mismatch'):
    checkpoint.load_timm(path, zoo.get('MobileViT_XS'))
  # Another class count: the head is re-initialised from init_params.
  config = zoo.get('MobileViT_XXS', num_classes=10)
  init = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype),
                      models.param_shapes(config))
  params = checkpoint.load_pretrained(path, config, init)
  np.testing.assert_array_equal(params['head']['kernel'], init['head']['kernel'])


def test_batchnorm_trains_on_batch_moments_and_evaluates_on_running_stats():
  bn = batch_norm.BatchNorm()
  x = jax.random.normal(jax.random.key(0), (8, 5, 5, 3)) * 3.0 + 2.0
  params = bn.init(jax.random.key(1), x, train=False)['params']
  y, state = bn.apply({'params': params}, x, train=True,
                      mutable=[batch_norm.COLLECTION])
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1, atol=1e-3)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  stats = state[batch_norm.COLLECTION]
  np.testing.assert_allclose(stats['running_mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats['running_var'], 0.9 + 0.1 * var, rtol=1e-5)
  # Evaluation uses the running statistics: at init (0, 1) it is the identity;
  # with the batch's moments in place it equals the training output.
  np.testing.assert_allclose(bn.apply({'params': params}, x, train=False), x,
                             atol=1e-4)
  moments = batch_norm.replace_running_stats(
      params, {'running_mean': mean, 'running_var': var})
  np.testing.assert_allclose(bn.apply({'params': moments}, x, train=False), y,
                             atol=1e-4)
  # The running statistics get exactly zero gradient in both modes.
  for train in (True, False):
    grads = jax.grad(lambda p: jnp.sum(jnp.sin(bn.apply(
        {'params': p}, x, train=train, mutable=[batch_norm.COLLECTION])[0])))(params)
    assert not np.any(grads['running_mean']) and not np.any(grads['running_var'])


@pytest.mark.parametrize('shape,size', [((2, 7, 7, 3), (8, 8)),
                                        ((2, 8, 8, 3), (7, 7)),
                                        ((1, 1, 3, 2), (2, 4))])
def test_resize_is_bilinear_half_pixel(shape, size):
  # Feature maps the patch does not tile are resized around the transformer
  # (at 32 px the last stage's 1x1 map: tests/test_mobilevit_digits.py).
  x = jax.random.normal(jax.random.key(0), shape)
  want = jax.image.resize(x, (shape[0],) + size + (shape[3],), 'bilinear',
                          antialias=False)
  np.testing.assert_allclose(mobilevit.resize(x, *size), want, atol=1e-5)


def _tiny_config():
  """A digits-sized MobileViT: 32 px, 10 classes, transformers of width 16, 24,
  32 (4 heads of 4, 6, 8) with 1, 2, 1 layers."""
  config = zoo.mobilevit((8, 16, 16, 24, 32), (1, 1, 1, 1, 1), 2.0,
                         (0, 0, 16, 24, 32), (0, 0, 1, 2, 1), 32)
  config.image_size, config.num_classes, config.stem_width = 32, 10, 8
  return config


def _random_params(config):
  rng = np.random.default_rng(0)
  return param_paths.map_with_paths(
      lambda p, s: jnp.asarray(
          rng.uniform(0.5, 1.5, s.shape) if p.endswith('running_var')
          else 0.3 * rng.standard_normal(s.shape), s.dtype),
      models.param_shapes(config))


@pytest.mark.slow
def test_shrink_removes_heads_neurons_and_a_layer_of_the_transformers(tmp_path):
  from vit_compress.compress import pruning
  from vit_compress.compress import shrink_cli
  from vit_compress.compress import structure
  from tests.helpers.pruning_helpers import prune_config
  config = _tiny_config()
  params = _random_params(config)
  families = structure.find_groups(params, config)
  assert sorted({f.encoder for f in families}) == [
      f'stages_{s}_1/Transformer' for s in (2, 3, 4)]
  prune = prune_config(method='heads_and_neurons', sparsity=0.5)
  masks = pruning.update_masks(params, pruning.init_masks(params, prune), 0, prune)
  dropped = 'stages_3_1/Transformer/encoderblock_0/'  # and one whole layer
  shapes = dict(param_paths.flatten_with_paths(params))
  masks = param_paths.map_with_paths(
      lambda p, m: jnp.zeros(shapes[p].shape) if p.startswith(dropped) else m, masks)

  new_params, new_config = structure.shrink(params, masks, config)
  assert new_config.transformer_depths == (0, 0, 1, 1, 1)
  assert new_config.layer_heads == (2, 2, 2)
  assert new_config.layer_mlp_dims == (16, 24, 32)
  assert config.get('layer_heads') is None  # the original untouched
  with pytest.raises(ValueError, match='encoderblock_0 has 2 heads but the model '
                     'config says 4'):
    structure.find_groups(new_params, config)  # the old config no longer fits
  flat = dict(param_paths.flatten_with_paths(new_params))
  att = 'stages_3_1/Transformer/encoderblock_0/MultiHeadDotProductAttention_0'
  assert flat[f'{att}/query/kernel'].shape == (24, 2, 6)  # head width kept
  assert 'stages_3_1/Transformer/encoderblock_1/LayerNorm_0/scale' not in flat
  # Removed: half the heads (3 x (d x hd + hd) + hd x d each) and half the
  # MLP neurons (2d + 1 each) of every kept layer, and the whole dropped
  # layer (8 d^2 + 11 d at d = 24).
  removed = sum(2 * (4 * d * (d // 4) + 3 * (d // 4)) + d * (2 * d + 1)
                for d in (16, 24, 32)) + 8 * 24 ** 2 + 11 * 24
  assert models.count_params(params) - models.count_params(new_params) == removed

  images = jax.random.normal(jax.random.key(7), (4, 32, 32, 3))
  logits = lambda c, p: jax.jit(models.build(c).apply)({'params': p}, images)
  masked = logits(config, pruning.apply_masks(params, masks))
  assert float(jnp.std(masked)) > 0.1  # not trivially equal
  np.testing.assert_allclose(logits(new_config, new_params), masked,
                             atol=1e-4, rtol=1e-4)

  # The command's path: saved masked model -> masks from its zeros -> shrunk,
  # saved, reloaded from its own config.
  checkpoint.save_model(str(tmp_path / 'model'), pruning.apply_masks(params, masks),
                        config)
  shrink_cli.shrink_saved_model(str(tmp_path / 'model'), str(tmp_path / 'shrunk'))
  loaded_config, loaded = checkpoint.load_model(str(tmp_path / 'shrunk'))
  assert tuple(loaded_config.layer_heads) == (2, 2, 2)
  np.testing.assert_allclose(logits(loaded_config, loaded), masked,
                             atol=1e-4, rtol=1e-4)
