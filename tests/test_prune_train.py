"""Pruning inside the trainer, then shrink: smaller, same logits, reloadable."""
import jax
import numpy as np
import pytest

from configs import prune as prune_config
from vit_compress import checkpoint
from vit_compress import models
from vit_compress import train
from vit_compress.compress import shrink_cli

pytestmark = pytest.mark.slow   # integration: see pytest.ini


def test_structured_pruning_in_training_then_shrink(digits_data_dir, tmp_path):
  config = prune_config.get_config('Micro_2,digits')
  config.data_dir = digits_data_dir
  config.total_steps = 40
  config.prune.end_step = 20
  config.prune.frequency = 5
  config.eval_every = config.checkpoint_every = 40
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics['step'] == 40

  model_dir, shrunk_dir = str(tmp_path / 'model'), str(tmp_path / 'shrunk')
  model_config, params, extra = checkpoint.load_model(model_dir, with_extra=True)
  assert 0.45 < extra['sparsity']['total'] < 0.55  # of the prunable kernels
  new_config, before, after = shrink_cli.shrink_saved_model(model_dir, shrunk_dir)
  # Micro_2: 4 layers of 4 heads and 256 neurons -> half of each kept.
  assert tuple(new_config.transformer.num_heads) == (2, 2, 2, 2)
  assert tuple(new_config.transformer.mlp_dim) == (128, 128, 128, 128)
  assert after < 0.6 * before

  reloaded_config, shrunk_params = checkpoint.load_model(shrunk_dir)
  images = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
  masked_logits = models.build(model_config).apply({'params': params}, images)
  shrunk_logits = models.build(reloaded_config).apply({'params': shrunk_params},
                                                      images)
  np.testing.assert_allclose(shrunk_logits, masked_logits, atol=1e-5)
  assert models.count_params(shrunk_params) == after
