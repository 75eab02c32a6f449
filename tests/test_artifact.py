"""artifact.load: every kind of saved artifact reloads to the logits it was saved
with; a workdir root resolves to its model; bad paths get one clear message."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from vit_compress import artifact
from vit_compress import checkpoint
from vit_compress import models
from vit_compress import transforms
from vit_compress import zoo
from vit_compress.compress import compact
from vit_compress.compress import quantize

IMAGES = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)


def _model():
  """A tiny 8 px ViT whose layer-1 head 0 and half its MLP are zero (pruned)."""
  config = zoo.get('Micro_2')
  config.image_size, config.num_classes = 8, 10
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape).astype(s.dtype),
                        models.param_shapes(config))
  block = params['Transformer']['encoderblock_1']
  for name in ('query', 'key', 'value'):
    block['MultiHeadDotProductAttention_0'][name]['kernel'][:, 0] = 0
    block['MultiHeadDotProductAttention_0'][name]['bias'][0] = 0
  block['MultiHeadDotProductAttention_0']['out']['kernel'][0] = 0
  mlp = block['MlpBlock_0']
  half = mlp['Dense_0']['kernel'].shape[1] // 2
  mlp['Dense_0']['kernel'][:, :half] = 0
  mlp['Dense_0']['bias'][:half] = 0
  mlp['Dense_1']['kernel'][:half] = 0
  return config, params


def _logits(module, params):
  return np.asarray(module.apply({'params': params}, images=IMAGES, train=False))


def _kinds(config, params):
  """{kind: (params, model config, module that computes them)}."""
  shrunk = transforms.apply('shrink', params, config)
  lowrank = transforms.apply('lowrank', params, config, rank=4)
  quantized = transforms.apply('quantize', params, config,
                               quant_config={'weight_dtype': 'int8'})
  return {'masked': (params, config, models.build(config)),
          'shrunk': (*shrunk, models.build(shrunk[1])),
          'lowrank': (*lowrank, models.build(lowrank[1])),
          'quantized': (*quantized, quantize.quantized_model(quantized[1]))}


@pytest.fixture(scope='module')
def kinds():
  return _kinds(*_model())


@pytest.mark.parametrize('kind', ['masked', 'shrunk', 'lowrank', 'quantized'])
@pytest.mark.parametrize('form', ['directory', 'workdir', 'compact'])
def test_every_kind_reloads_with_equal_logits(kinds, kind, form, tmp_path):
  params, config, module = kinds[kind]
  if form == 'compact':
    path = target = str(tmp_path / 'model.npz')
  else:
    target = str(tmp_path / checkpoint.MODEL_SUBDIR)
    path = str(tmp_path) if form == 'workdir' else target
  if form == 'workdir':   # a training workdir's root has a model_config.json too
    with open(tmp_path / checkpoint.CONFIG_FILE, 'w') as f:
      json.dump({'name': config.name}, f)
  artifact.save(target, params, config)
  loaded = artifact.load(path)
  assert loaded.path == target and loaded.quantized == (kind == 'quantized')
  assert (checkpoint.config_to_json(loaded.model_config)
          == checkpoint.config_to_json(config))
  np.testing.assert_array_equal(_logits(loaded.module, loaded.params),
                                _logits(module, params))
  loaded_module, loaded_params, loaded_config = loaded   # unpacks as a triple
  assert loaded_module is loaded.module and loaded_config is loaded.model_config
  assert artifact.read_config(path).to_dict() == loaded.model_config.to_dict()


def test_shrunk_is_smaller_and_computes_the_masked_logits(kinds):
  (masked, config, module), (shrunk, shrunk_config, shrunk_module) = (
      kinds['masked'], kinds['shrunk'])
  t = shrunk_config.transformer   # layer 1 lost one head and half its MLP
  heads, mlp = config.transformer.num_heads, config.transformer.mlp_dim
  assert t.num_heads == (heads, heads - 1) + (heads,) * (len(t.num_heads) - 2)
  assert t.mlp_dim[:2] == (mlp, mlp // 2)
  assert models.count_params(shrunk) < models.count_params(masked)
  np.testing.assert_allclose(_logits(shrunk_module, shrunk), _logits(module, masked),
                             rtol=1e-5, atol=1e-6)


def test_dequantized_is_the_float_model_the_integers_compute(kinds, tmp_path):
  params, config, module = kinds['quantized']
  artifact.save(str(tmp_path / 'q'), params, config)
  loaded = artifact.load(str(tmp_path / 'q'))
  floats = loaded.dequantized()
  assert not floats.quantized and 'quant' not in floats.model_config
  # Weight-only int8: the float model of int8 weights times scales computes
  # what the quantized model computes.
  np.testing.assert_allclose(_logits(floats.module, floats.params),
                             _logits(module, params), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='holds a quantized model; export the float'):
    artifact.load(str(tmp_path / 'q'), require_float='export the float model.')


def test_tome_r_is_set_on_a_vit(kinds, tmp_path):
  params, config, _ = kinds['masked']
  artifact.save(str(tmp_path / 'm'), params, config)
  assert artifact.load(str(tmp_path / 'm'), tome_r=1).model_config.tome_r == 1


def test_save_refuses_to_overwrite(kinds, tmp_path):
  params, config, _ = kinds['masked']
  for path in (str(tmp_path / 'm'), str(tmp_path / 'm.npz')):
    artifact.save(path, params, config)
    with pytest.raises(FileExistsError):
      artifact.save(path, params, config)
    artifact.save(path, params, config, overwrite=True)


def _bad_paths(root):
  os.makedirs(root / 'empty')
  os.makedirs(root / 'workdir')   # a workdir whose training never finished
  with open(root / 'workdir' / checkpoint.CONFIG_FILE, 'w') as f:
    json.dump({'name': 'Micro_2'}, f)
  np.savez(root / 'plain.npz', kernel=np.zeros(3))
  (root / 'model.tflite').write_bytes(b'TFL3')
  (root / 'notes.txt').write_text('hello')
  return [
      ('missing', str(root / 'nope'), r"'.*nope' does not exist: give a saved model"),
      ('empty dir', str(root / 'empty'),
       r"'.*empty' is a directory but not a saved model .*WORKDIR/model"),
      ('workdir without model', str(root / 'workdir'),
       r"'.*workdir' is a directory but not a saved model \(no model_config.json "
       r'beside params/\), nor a workdir with a finished model/'),
      ('plain npz', str(root / 'plain.npz'),
       r"'.*plain\.npz' is a file of another kind: .*checkpoint\.load_npz"),
      ('tflite', str(root / 'model.tflite'),
       r"'.*model\.tflite' is a file of another kind: TFLite and ONNX"),
      ('text file', str(root / 'notes.txt'),
       r"'.*notes\.txt' is a file of another kind: give a saved model"),
      ('empty path', '', r'path is empty: give a saved model'),
  ]


def test_bad_paths_get_one_clear_message(tmp_path):
  for name, path, pattern in _bad_paths(tmp_path):
    for fn in (artifact.load, artifact.read_config):
      with pytest.raises(ValueError, match=pattern) as e:
        fn(path)
      assert isinstance(e.value, FileNotFoundError), name
      assert 'NoneType' not in str(e.value), name
  with pytest.raises(ValueError, match=r"--model='.*nope' does not exist"):
    artifact.load(str(tmp_path / 'nope'), key='--model')


def test_compact_file_is_recognised_only_with_its_index(kinds, tmp_path):
  params, config, _ = kinds['masked']
  compact.save(str(tmp_path / 'c.npz'), params, config)
  np.savez(tmp_path / 'plain.npz', kernel=np.zeros(3))
  assert artifact.is_compact(str(tmp_path / 'c.npz'))
  assert not artifact.is_compact(str(tmp_path / 'plain.npz'))
  assert not artifact.is_compact(str(tmp_path / 'missing.npz'))


def test_predict_loads_a_workdir_root_and_a_compact_file(kinds, tmp_path):
  from vit_compress import predict  # pylint: disable=g-import-not-at-top
  params, config, module = kinds['quantized']
  config = ml_collections.ConfigDict(config.to_dict())
  config.inference = {'pp_eval': 'decode|to_rgb|value_range(-1, 1)',
                      'class_names': [str(i) for i in range(10)]}
  with open(tmp_path / checkpoint.CONFIG_FILE, 'w') as f:   # the workdir's own
    json.dump({'name': config.name}, f)
  artifact.save(str(tmp_path / checkpoint.MODEL_SUBDIR), params, config)
  artifact.save(str(tmp_path / 'one.npz'), params, config)
  for path in (str(tmp_path), str(tmp_path / 'one.npz')):
    p = predict.load(path)
    assert p.quantized and p.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_array_equal(_logits(p.module, p.params), _logits(module, params))
  with pytest.raises(ValueError, match=r"'.*empty' is a directory but not a saved"):
    os.makedirs(tmp_path / 'empty')
    predict.load(str(tmp_path / 'empty'))


def test_an_unknown_transform_lists_the_known_ones(kinds):
  params, config, _ = kinds['masked']
  with pytest.raises(ValueError, match=r"Unknown compression transform 'shrnk'\. "
                     r"Did you mean 'shrink'\?.*lowrank, quantize, shrink"):
    transforms.apply('shrnk', params, config)
  assert transforms.TRANSFORMS.names() == ['dequantize', 'lowrank', 'quantize', 'shrink']
