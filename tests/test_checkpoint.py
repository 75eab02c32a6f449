"""Checkpoint import/export: vit_jax and big_vision .npz layouts, saved models.

Each foreign file is written here from a model's own (random) parameters,
renamed to the layout the public files use, so importing it must reproduce
the very same outputs.
"""
import logging
import re

import jax
import numpy as np
import pytest
import scipy.ndimage

from tests.helpers.params import random_params
from vit_compress import checkpoint
from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo

# vit_jax's pre-Linen names inside an encoder block (DESIGN.md, section 5).
PRE_LINEN = {'LayerNorm_0': 'LayerNorm_0',
             'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
             'LayerNorm_1': 'LayerNorm_2', 'MlpBlock_0': 'MlpBlock_3'}


def flat(tree):
  return dict(param_paths.flatten_with_paths(tree))


def images(config, batch=2, seed=1):
  size = config.image_size
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(
      np.float32)


_COMPILED = {}  # model config JSON -> jitted apply; compiling dominates runtime


def outputs(config, *trees, **inputs):
  """The model's outputs for each parameter tree, from one compiled function."""
  key = config.to_json()
  if key not in _COMPILED:
    model = models.build(config)
    _COMPILED[key] = jax.jit(lambda p, kw: model.apply({'params': p}, **kw))
  return [jax.tree.map(np.asarray, _COMPILED[key](tree, inputs)) for tree in trees]


def pre_linen(key):
  return re.sub(r'(encoderblock_\d+)/(\w+?_\d+)/',
                lambda m: f'{m[1]}/{PRE_LINEN[m[2]]}/', key)


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    assert np.asarray(fa[key]).dtype == np.asarray(fb[key]).dtype, key
    np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]),
                                  err_msg=key)


def ti16_small():
  """Ti/16's widths and names (192 wide, 3 heads, mlp 768) at 32 px, 2 layers."""
  config = zoo.get('Ti_16', image_size=32, num_classes=10)
  config.transformer.num_layers = 2
  return config


def test_vit_jax_pre_linen_file_gives_identical_logits(tmp_path):
  config = ti16_small()
  params = random_params(config, scale=0.5)
  arrays = {pre_linen(k): v for k, v in flat(params).items()}
  assert 'Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel' in arrays
  assert arrays['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'].shape == (192, 768)
  path = str(tmp_path / 'Ti_16.npz')
  np.savez(path, **arrays)

  loaded = checkpoint.load_npz(path, config)
  assert_trees_equal(loaded, params)
  x = images(config)
  got, want = outputs(config, loaded, params, images=x)
  np.testing.assert_array_equal(got, want)


def big_vision_vit_arrays(params, prefix='', scan=False):
  """big_vision's layout: top-level pos_embedding without the class slot."""
  out = {}
  for key, value in flat(params).items():
    if key == 'Transformer/posembed_input/pos_embedding':
      out[prefix + 'pos_embedding'] = value[:, 1:]
    elif scan and 'encoderblock_' in key:
      pass  # stacked below
    else:
      out[prefix + key] = value
  if scan:
    blocks = flat(params['Transformer'])
    layers = sorted({k.split('/')[0] for k in blocks if k.startswith('encoderblock_')})
    for rest in {k.split('/', 1)[1] for k in blocks if k.startswith('encoderblock_0/')}:
      out[f'{prefix}Transformer/encoderblock/{rest}'] = np.stack(
          [blocks[f'{layer}/{rest}'] for layer in layers])
  return out


def zero_class_posemb(params):
  """The one model big_vision's files describe: no position added to cls."""
  posemb = np.array(params['Transformer']['posembed_input']['pos_embedding'])
  posemb[:, 0] = 0
  params['Transformer']['posembed_input']['pos_embedding'] = posemb
  return params


def test_big_vision_vit_scanned_gives_identical_logits(tmp_path):
  config = ti16_small()
  params = zero_class_posemb(random_params(config, seed=2, scale=0.5))
  arrays = {'params/' + k: v for k, v in
            big_vision_vit_arrays(params, scan=True).items()}
  assert arrays['params/pos_embedding'].shape == (1, 4, 192)  # 2x2 grid, no cls
  assert arrays['params/Transformer/encoderblock/LayerNorm_0/scale'].shape == (2, 192)
  path = str(tmp_path / 'bv_vit.npz')
  np.savez(path, **arrays)

  loaded = checkpoint.load_npz(path, config)
  posemb = loaded['Transformer']['posembed_input']['pos_embedding']
  assert posemb.shape == (1, 5, 192)
  np.testing.assert_array_equal(posemb[:, 0], 0)
  assert_trees_equal(loaded, params)
  x = images(config)
  got, want = outputs(config, loaded, params, images=x)
  np.testing.assert_array_equal(got, want)


def test_big_vision_lit_two_towers_give_identical_outputs(tmp_path):
  config = zoo.get('LiT_Nano')
  params = random_params(config, seed=3, scale=0.5)
  params['img'] = zero_class_posemb(params['img'])
  arrays = {f'params/img/{k}': v
            for k, v in big_vision_vit_arrays(params['img']).items()}
  arrays.update({f'params/txt/{k}': v for k, v in flat(params['txt']).items()})
  arrays['params/t'] = params['t']
  assert 'params/img/pos_embedding' in arrays and 'params/txt/pos_embedding' in arrays
  path = str(tmp_path / 'lit.npz')
  np.savez(path, **arrays)

  loaded = checkpoint.load_npz(path, config)
  assert_trees_equal(loaded, params)
  tokens = np.random.default_rng(4).integers(1, 260, (3, config.max_len))
  x = images(config, batch=3)
  got, want = outputs(config, loaded, params, images=x, tokens=tokens)
  for name in ('zimg', 'ztxt', 'logits'):
    np.testing.assert_array_equal(got[name], want[name])


def test_resolution_change_resamples_position_embedding(tmp_path):
  small = zoo.get('Nano_2', image_size=32)   # 16x16 patches
  large = zoo.get('Nano_2', image_size=48)   # 24x24 patches
  params = random_params(small, seed=5, scale=0.5)
  path = str(tmp_path / 'nano32.npz')
  checkpoint.export_npz(path, params)

  loaded = checkpoint.load_npz(path, large)
  old = params['Transformer']['posembed_input']['pos_embedding']
  new = loaded['Transformer']['posembed_input']['pos_embedding']
  assert old.shape == (1, 257, 32) and new.shape == (1, 577, 32)
  np.testing.assert_array_equal(new[:, 0], old[:, 0])  # class slot kept
  grid = scipy.ndimage.zoom(old[0, 1:].reshape(16, 16, 32), (1.5, 1.5, 1),
                            order=1)
  np.testing.assert_allclose(new[0, 1:], grid.reshape(576, 32), rtol=0, atol=1e-6)
  # Corners of a bilinear zoom are the old corners.
  np.testing.assert_allclose(new[0, 1], old[0, 1], atol=1e-6)
  np.testing.assert_allclose(new[0, -1], old[0, -1], atol=1e-6)
  rest = lambda t: {k: v for k, v in flat(t).items() if 'pos_embedding' not in k}
  assert_trees_equal(rest(loaded), rest(params))


def test_hybrid_with_old_groupnorm_shapes_imports(tmp_path):
  config = zoo.get('R_Nano_2')
  params = random_params(config, seed=6, scale=0.5)
  arrays = {}
  for key, value in flat(params).items():
    if re.search(r'(^|/)gn(\d|_root|_proj)\w*/(scale|bias)$', key):
      value = value.reshape(1, 1, 1, -1)  # pre-Linen GroupNorm layout
    arrays[pre_linen(key)] = value
  assert arrays['block1/unit1/gn3/scale'].shape == (1, 1, 1, 128)
  assert arrays['gn_root/bias'].shape == (1, 1, 1, 32)
  path = str(tmp_path / 'R_Nano_2.npz')
  np.savez(path, **arrays)

  loaded = checkpoint.load_npz(path, config)
  assert loaded['gn_root']['scale'].shape == (32,)
  assert_trees_equal(loaded, params)
  x = images(config)
  got, want = outputs(config, loaded, params, images=x)
  np.testing.assert_array_equal(got, want)


def test_mixer_file_gives_identical_logits(tmp_path):
  config = zoo.get('Mixer_Nano_2')
  params = random_params(config, seed=7, scale=0.5)
  path = str(tmp_path / 'mixer.npz')
  np.savez(path, **flat(params))
  loaded = checkpoint.load_npz(path, config)
  x = images(config)
  got, want = outputs(config, loaded, params, images=x)
  np.testing.assert_array_equal(got, want)


def test_head_reset_when_classes_differ(tmp_path, caplog):
  source = zoo.get('Nano_2')  # 10 classes
  params = random_params(source, seed=8, scale=0.5)
  path = str(tmp_path / 'nano.npz')
  checkpoint.export_npz(path, params)
  target = zoo.get('Nano_2', num_classes=5)

  with caplog.at_level(logging.INFO):
    zeroed = checkpoint.load_npz(path, target)
  assert 'head re-initialised' in caplog.text
  assert zeroed['head']['kernel'].shape == (32, 5)
  np.testing.assert_array_equal(zeroed['head']['kernel'], 0)
  np.testing.assert_array_equal(zeroed['head']['bias'], 0)

  init = random_params(target, seed=9, scale=0.5)
  loaded = checkpoint.load_pretrained(path, target, init)
  np.testing.assert_array_equal(loaded['head']['kernel'], init['head']['kernel'])
  np.testing.assert_array_equal(loaded['head']['bias'], init['head']['bias'])
  body = lambda t: {k: v for k, v in flat(t).items() if not k.startswith('head/')}
  assert_trees_equal(body(loaded), body(params))


def test_shape_mismatch_is_one_error_listing_keys(tmp_path):
  path = str(tmp_path / 'nano.npz')
  checkpoint.export_npz(path, random_params(zoo.get('Nano_2'), scale=0.5))
  with pytest.raises(checkpoint.CheckpointMismatchError) as error:
    checkpoint.load_npz(path, zoo.get('Micro_2'))  # 64 wide, 4 layers, 4 heads
  message = str(error.value)
  assert path in message and "'Micro_2'" in message
  assert ('embedding/kernel: (2, 2, 3, 32) in the checkpoint, (2, 2, 3, 64) '
          'in the model') in message
  assert ('Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/'
          'kernel: (32, 2, 16) in the checkpoint, (64, 4, 16) in the model') in message
  # A head whose input width differs is a mismatch, not a class-count reset.
  assert 'head/kernel: (32, 10) in the checkpoint, (64, 10) in the model' in message
  assert 'Missing from the checkpoint:\n  Transformer/encoderblock_2/' in message
  assert 'zoo name' in message and 'handled automatically' in message

  mixer = str(tmp_path / 'mixer.npz')
  checkpoint.export_npz(mixer, random_params(zoo.get('Mixer_Nano_2'), scale=0.5))
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'not in the model:\n(  .*\n)*  MixerBlock_0/LayerNorm_0/bias'):
    checkpoint.load_npz(mixer, zoo.get('Nano_2'))


def test_missing_and_unreadable_files_are_named(tmp_path):
  path = str(tmp_path / 'nowhere' / 'Ti_16.npz')
  with pytest.raises(FileNotFoundError, match=re.escape(path)):
    checkpoint.load_npz(path, zoo.get('Nano_2'))
  with pytest.raises(FileNotFoundError, match=re.escape(path)):
    checkpoint.load_pretrained(path, zoo.get('Nano_2'), {})
  with pytest.raises(FileNotFoundError, match='model_config.json is missing'):
    checkpoint.load_model(str(tmp_path))
  with pytest.raises(IsADirectoryError, match='load_model'):
    checkpoint.load_npz(str(tmp_path), zoo.get('Nano_2'))
  pickled = str(tmp_path / 'pickled.npz')
  np.savez(pickled, meta=np.array([{'a': 1}], dtype=object))
  with pytest.raises(ValueError, match=re.escape(pickled) + '.*plain arrays'):
    checkpoint.read_npz(pickled)


@pytest.mark.parametrize('name,dtype', [('R_Nano_2', 'float32'),
                                        ('LiT_Nano', 'float32'),
                                        ('Nano_2', 'bfloat16')])
def test_export_import_round_trip_is_exact(tmp_path, name, dtype):
  config = zoo.get(name, param_dtype=dtype)
  if name == 'LiT_Nano':
    config.image.param_dtype = dtype
  params = random_params(config, seed=10, scale=0.5)
  path = str(tmp_path / 'sub' / 'export.npz')
  checkpoint.export_npz(path, params)
  with np.load(path, allow_pickle=False) as data:
    keys, dtypes = set(data.files), {data[k].dtype for k in data.files}
  # Exported as the public vit_jax files spell encoder blocks.
  assert any('encoderblock_0/MlpBlock_3/Dense_0/kernel' in k for k in keys)
  assert not any('MultiHeadDotProductAttention_0' in k for k in keys)
  assert dtypes == {np.dtype('float32')}
  assert_trees_equal(checkpoint.load_npz(path, config), params)

  linen = str(tmp_path / 'linen.npz')
  checkpoint.export_npz(linen, params, names='linen')
  with np.load(linen, allow_pickle=False) as data:
    assert sorted(data.files) == sorted(flat(params))


def test_save_and_load_model_round_trip(tmp_path):
  config = zoo.get('Nano_2')  # a "pruned" model: per-layer heads and widths
  config.transformer.num_heads = (2, 1)
  config.transformer.mlp_dim = (128, 48)
  config.transformer.head_dim = 16
  params = random_params(config, seed=11, scale=0.5)
  quantized = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
  tree = dict(params, quant={'kernel': quantized, 'scale': np.float32(0.5)})
  directory = str(tmp_path / 'model')
  checkpoint.save_model(directory, tree, config, extra={'method': 'test', 'sparsity': 0.5})

  loaded_config, loaded, extra = checkpoint.load_model(directory, with_extra=True)
  assert loaded_config.to_dict() == config.to_dict()  # tuples stay tuples
  assert isinstance(loaded_config.patches.size, tuple)
  assert loaded_config.transformer.mlp_dim == (128, 48)
  assert extra == {'method': 'test', 'sparsity': 0.5}
  assert loaded['quant']['kernel'].dtype == np.int8
  assert_trees_equal(loaded, tree)
  del loaded['quant']
  x = images(config)
  got, want = outputs(loaded_config, loaded, params, images=x)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(FileExistsError, match='overwrite=True'):
    checkpoint.save_model(directory, tree, config)


def test_load_pretrained_from_saved_model_and_into_a_tower(tmp_path):
  source = zoo.get('Nano_2')  # 8 px, 10 classes
  params = random_params(source, seed=12, scale=0.5)
  directory = str(tmp_path / 'saved')
  checkpoint.save_model(directory, params, source)
  target = zoo.get('Nano_2', image_size=16, num_classes=3)
  init = random_params(target, seed=13, scale=0.5)
  loaded = checkpoint.load_pretrained(directory, target, init)
  assert loaded['Transformer']['posembed_input']['pos_embedding'].shape == (1, 65, 32)
  np.testing.assert_array_equal(loaded['head']['kernel'], init['head']['kernel'])
  np.testing.assert_array_equal(loaded['embedding']['kernel'],
                                params['embedding']['kernel'])

  # LiT's image tower from a ViT classifier file: the classifier head is
  # dropped (no image projection) or becomes the fresh projection; the text
  # tower and temperature keep their initial values.
  path = str(tmp_path / 'vit.npz')
  checkpoint.export_npz(path, params)
  body = lambda t: {k: v for k, v in flat(t).items() if not k.startswith('head/')}
  for out_dim in ((None, 32), (32, 32)):
    lit = zoo.get('LiT_Nano', out_dim=out_dim)
    lit_init = random_params(lit, seed=14, scale=0.5)
    lit_params = checkpoint.load_pretrained(path, lit, lit_init, into='img')
    assert_trees_equal(body(lit_params['img']), body(params))
    if out_dim[0] is None:
      assert 'head' not in lit_params['img']
    else:
      assert lit_params['img']['head']['kernel'].shape == (32, 32)
      assert_trees_equal(lit_params['img']['head'], lit_init['img']['head'])
    assert_trees_equal(lit_params['txt'], lit_init['txt'])
    np.testing.assert_array_equal(lit_params['t'], lit_init['t'])
