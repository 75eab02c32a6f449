"""Config validation at start-up: clear messages that name the key, before any compile."""

import jax
import numpy as np
import pytest

from configs import augreg
from tests.helpers.train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import config_schema
from vit_compress import models
from vit_compress import train
from vit_compress import zoo


def _prepare(config):
  return train.prepare(config)


def test_every_zoo_model_gets_an_augreg_config():
  for name in zoo.PUBLISHED:
    if name.startswith('LiT'):
      continue
    config = config_schema.complete(augreg.get_config(name))
    config_schema.validate(config)
    assert config.model.name == name


def test_misspelled_top_level_key_names_the_closest():
  config = augreg.get_config('Ti_16')
  config.totl_steps = 10
  with pytest.raises(ValueError, match="Unknown config key 'totl_steps'.*'total_steps'"):
    _prepare(config)


def test_misspelled_section_key_names_the_closest():
  config = augreg.get_config('Ti_16')
  config.optim.momentun = 0.5
  with pytest.raises(ValueError, match="momentun.*Did you mean 'momentum'"):
    _prepare(config)


def test_patch_that_does_not_divide_the_image():
  config = augreg.get_config('Ti_16')
  config.model.image_size = 200
  with pytest.raises(ValueError, match=r'patches.size=\(16, 16\) does not divide '
                     r'config.model.image_size=200.*multiple of 16'):
    _prepare(config)


def test_hybrid_stem_downsampling_is_accounted_for():
  config = augreg.get_config('R50_B_16')   # stem 16x, patch 1
  config.model.image_size = 200            # 200 / 16 is not whole
  with pytest.raises(ValueError, match='downsamples it 16x'):
    _prepare(config)


def test_unknown_loss_and_mode():
  config = augreg.get_config('Ti_16')
  config.loss = 'softmax_xnet'
  with pytest.raises(KeyError, match="Did you mean 'softmax_xent'"):
    _prepare(config)
  config = augreg.get_config('Ti_16')
  config.mode = 'trian'
  with pytest.raises(ValueError, match="Did you mean 'train'"):
    _prepare(config)


def test_distillation_without_teacher_and_bad_sparsity():
  config = augreg.get_config('Ti_16')
  config.loss = 'kd'
  with pytest.raises(ValueError, match='config.teacher.checkpoint'):
    _prepare(config)
  config = augreg.get_config('Ti_16')
  config.prune.method = 'heads'
  config.prune.sparsity = 1.2
  with pytest.raises(ValueError, match=r'sparsity=1.2 must be in \[0, 1\)'):
    _prepare(config)


def test_accum_steps_must_divide_the_batch():
  config = augreg.get_config('Ti_16')
  config.optim.accum_steps = 3
  with pytest.raises(ValueError, match='accum_steps=3.*dividing config.batch_size=512'):
    _prepare(config)


@pytest.mark.slow
def test_init_from_vit_jax_npz_resets_the_head(digits_data_dir, tmp_path):
  # A "pretrained" Nano_2 with 5 classes, written in vit_jax's layout.
  source = zoo.get('Nano_2')
  source.num_classes = 5
  params = jax.device_get(models.init(source, jax.random.key(7)))
  params['head']['kernel'] = np.ones_like(params['head']['kernel'])
  npz = str(tmp_path / 'pretrained.npz')
  checkpoint.export_npz(npz, params)
  # One step at warm-up lr 0 leaves the imported weights as they are.
  config = digits_config(digits_data_dir, total_steps=1, init_from=npz,
                         checkpoint_every=1, **{'schedule.warmup_steps': 1})
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  _, trained = checkpoint.load_model(str(tmp_path / 'run' / 'model'))
  assert trained['head']['kernel'].shape == (32, 10)
  np.testing.assert_array_equal(trained['head']['kernel'], 0)  # reset
  del params['head'], trained['head']
  jax.tree.map(np.testing.assert_array_equal, params, trained)
