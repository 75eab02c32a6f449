"""LiT on digits captions: a text tower tuned to a locked image tower."""
import jax
import numpy as np

from configs import lit as lit_config
from train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import train


def test_lit_zero_shot_far_above_chance_with_locked_image_tower(digits_data_dir,
                                                                tmp_path):
  image_workdir = tmp_path / 'image'
  train.train_and_evaluate(
      digits_config(digits_data_dir, 'Nano_2', total_steps=200,
                    checkpoint_every=200, **{'schedule.base_lr': 0.003}),
      str(image_workdir))
  _, image_params = checkpoint.load_model(str(image_workdir / 'model'))

  config = lit_config.get_config('LiT_Nano')
  config.data_dir = digits_data_dir
  config.init_from = str(image_workdir / 'model')
  config.total_steps = 150
  config.eval_every = config.checkpoint_every = 150
  metrics = train.train_and_evaluate(config, str(tmp_path / 'lit'))
  print(f'LiT zero-shot top-1 on digits: {metrics["accuracy"]:.3f}')
  assert metrics['examples'] == 355
  assert metrics['accuracy'] > 0.5  # chance is 0.1

  # The image tower is the classifier's (without its head) and stayed locked.
  _, lit_params = checkpoint.load_model(str(tmp_path / 'lit' / 'model'))
  locked = dict(image_params)
  del locked['head']
  jax.tree.map(np.testing.assert_array_equal, locked, lit_params['img'])
