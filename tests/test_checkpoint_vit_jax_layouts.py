"""vit_jax `.npz` files as its `test_utils.create_checkpoint` writes them.

vit_jax's test_utils saves a Linen `VisionTransformer`'s params with
`np.savez`: keys are the '/'-joined, sorted parameter paths (Linen names:
`MultiHeadDotProductAttention_0`, `MlpBlock_0`), the class token and its
position slot only for the 'token' classifier, `pre_logits` when the config
has a `representation_size`. (Pre-Linen files, big_vision's bfloat16, MAP
and sincos2d files: test_checkpoint.py and test_checkpoint_big_vision.py.)
"""
import ml_dtypes
import numpy as np
import pytest

from test_checkpoint import assert_trees_equal, flat, images, outputs, random_params
from vit_compress import checkpoint
from vit_compress import param_paths
from vit_compress import zoo


@pytest.mark.parametrize('classifier,representation_size,dtype', [
    ('token', None, 'float32'), ('gap', None, 'float32'),
    ('token', 24, 'float32'), ('gap', 24, 'bfloat16')])
def test_test_utils_file_imports_with_the_reference_logits(
    tmp_path, classifier, representation_size, dtype):
  config = zoo.get('Nano_2', classifier=classifier,
                   representation_size=representation_size, num_classes=1)
  params = random_params(config, seed=5)
  arrays = {k: flat(params)[k] for k in sorted(flat(params))}
  assert ('cls' in arrays) == (classifier == 'token')
  assert ('pre_logits/kernel' in arrays) == bool(representation_size)
  assert arrays['Transformer/posembed_input/pos_embedding'].shape[1] == (
      16 + (classifier == 'token'))
  assert 'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel' in arrays
  if dtype == 'bfloat16':   # a user's cast file: np.savez keeps bf16 as '|V2'
    arrays = {k: np.asarray(v).astype(ml_dtypes.bfloat16) for k, v in arrays.items()}
    reference = param_paths.tree_from_flat(
        {k: np.asarray(v).astype(np.float32) for k, v in arrays.items()}, like=params)
  else:
    reference = params
  path = str(tmp_path / 'vit_jax_test_utils.npz')
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  loaded = checkpoint.load_npz(path, config)
  assert_trees_equal(loaded, reference)
  x = images(config, batch=3)
  got, want = outputs(config, loaded, reference, images=x)
  assert got.shape == (3, 1)
  np.testing.assert_array_equal(got, want)
