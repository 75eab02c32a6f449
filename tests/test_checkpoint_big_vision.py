"""big_vision files as users have them: bfloat16 arrays, params-only layout."""
import ml_dtypes
import numpy as np
import pytest

from test_checkpoint import (assert_trees_equal, big_vision_vit_arrays, images,
                             outputs, random_params, ti16_small, zero_class_posemb)
from vit_compress import checkpoint


def _bf16_rounded(params):
  """The float32 values a bfloat16 file holds."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda v: np.asarray(v).astype(ml_dtypes.bfloat16)
                      .astype(np.float32), params)


@pytest.mark.parametrize('prefix', ['params/', ''], ids=['params/', 'params-only'])
def test_bfloat16_file_imports_with_the_reference_logits(tmp_path, prefix):
  config = ti16_small()
  params = zero_class_posemb(random_params(config, seed=3))
  arrays = {prefix + k: np.asarray(v).astype(ml_dtypes.bfloat16)
            for k, v in big_vision_vit_arrays(params, scan=True).items()}
  path = str(tmp_path / 'bv_bf16.npz')
  np.savez(path, **arrays)   # as big_vision does: bf16 is stored as raw '|V2'
  with np.load(path) as raw:
    assert raw[prefix + 'pos_embedding'].dtype == np.dtype('V2')
  loaded = checkpoint.load_npz(path, config)
  reference = _bf16_rounded(params)
  assert_trees_equal(loaded, reference)
  got, want = outputs(config, loaded, reference, images=images(config))
  np.testing.assert_array_equal(got, want)


def test_params_only_big_vision_file_is_named_so_in_errors(tmp_path):
  config = ti16_small()
  arrays = big_vision_vit_arrays(random_params(config), scan=True)
  arrays['pos_embedding'] = arrays['pos_embedding'][:, :3]   # not a square grid
  path = str(tmp_path / 'bv.npz')
  np.savez(path, **arrays)
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r'\[big_vision\]'):
    checkpoint.load_npz(path, config)


@pytest.mark.parametrize('classifier,posemb,dtype', [
    ('map', 'sincos2d', 'float32'), ('map', 'learn', 'bfloat16'),
    ('gap', 'sincos2d', 'bfloat16'), ('token', 'learn', 'float32')])
def test_siglip_style_towers_import(tmp_path, classifier, posemb, dtype):
  """big_vision's MAP head and fixed sincos2d position embedding, params-only."""
  config = ti16_small()
  config.classifier, config.posemb = classifier, posemb
  params = random_params(config, seed=4)
  if classifier == 'token' and posemb == 'learn':
    params = zero_class_posemb(params)
  arrays = big_vision_vit_arrays(params, scan=True)
  assert ('pos_embedding' in arrays) == (posemb == 'learn')
  if posemb == 'learn' and classifier != 'token':   # no class slot to drop
    arrays['pos_embedding'] = params['Transformer']['posembed_input']['pos_embedding']
  if classifier == 'map':
    assert arrays['MAPHead_0/probe'].shape == (1, 1, 192)
    assert arrays['MAPHead_0/MultiHeadDotProductAttention_0/query/kernel'].shape == (
        192, 3, 64)
  cast = (lambda v: np.asarray(v).astype(ml_dtypes.bfloat16)) if dtype == 'bfloat16' \
      else np.asarray
  path = str(tmp_path / 'siglip.npz')
  np.savez(path, **{k: cast(v) for k, v in arrays.items()})
  loaded = checkpoint.load_npz(path, config)
  reference = _bf16_rounded(params) if dtype == 'bfloat16' else params
  assert_trees_equal(loaded, reference)
  got, want = outputs(config, loaded, reference, images=images(config))
  np.testing.assert_array_equal(got, want)


def test_sincos2d_values():
  from vit_compress.models import vit  # pylint: disable=g-import-not-at-top
  pe = np.asarray(vit.posemb_sincos_2d(2, 3, 8))
  assert pe.shape == (1, 6, 8)
  # Patch (row 0, col 0): sin 0 = 0, cos 0 = 1 at both frequencies, x then y.
  np.testing.assert_allclose(pe[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
  # Patch (row 1, col 2) at the lowest frequency 1: sin(2), cos(2), sin(1), cos(1).
  np.testing.assert_allclose(pe[0, 5, [0, 2, 4, 6]],
                             [np.sin(2), np.cos(2), np.sin(1), np.cos(1)], rtol=1e-6)
  # The highest frequency is 1 / temperature.
  np.testing.assert_allclose(pe[0, 5, 1], np.sin(2 / 10_000), rtol=1e-5)
