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
