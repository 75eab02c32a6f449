"""Teacher-initialised students (the teacher's blocks, heads and neurons, copied),
and the mixup view that teacher and student share in the train step."""
import jax
import ml_collections
import numpy as np
import pytest

from tests.helpers.params import random_params
from vit_compress import models
from vit_compress import param_paths
from vit_compress import zoo
from vit_compress.compress import student_init


def _spec(**overrides):
  spec = student_init.default_config().to_dict()
  spec.update(overrides)
  return ml_collections.ConfigDict(spec)


def _logits(config, params, images):
  return np.asarray(models.build(config).apply({'params': params}, images=images,
                                               train=False))


@pytest.fixture(scope='module')
def teacher():
  config = zoo.get('Micro_2')   # 4 layers, 4 heads, MLP 256
  config.image_size, config.num_classes = 8, 10
  return config, random_params(config, scale=0.1)




def test_nothing_dropped_gives_the_teachers_logits(teacher):
  config, params = teacher
  spec = _spec(layers=(0, 1, 2, 3), num_heads=4, mlp_dim=256)
  new_params, new_config = student_init.init_student(params, config, spec)
  images = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(_logits(new_config, new_params, images),
                             _logits(config, params, images), rtol=1e-5, atol=1e-6)
  assert models.count_params(new_params) == models.count_params(params)


def test_layer_subset_copies_those_blocks(teacher):
  config, params = teacher
  new_params, new_config = student_init.init_student(params, config,
                                                     _spec(layers='odd'))
  assert new_config.transformer.num_layers == 2
  flat, old = dict(param_paths.flatten_with_paths(new_params)), dict(
      param_paths.flatten_with_paths(params))
  for new_i, old_i in enumerate((1, 3)):
    for name in ('MlpBlock_0/Dense_0/kernel', 'MultiHeadDotProductAttention_0/out/kernel'):
      np.testing.assert_array_equal(
          flat[f'Transformer/encoderblock_{new_i}/{name}'],
          old[f'Transformer/encoderblock_{old_i}/{name}'])
  assert 'Transformer/encoderblock_2/LayerNorm_0/scale' not in flat
  for name in ('embedding/kernel', 'head/kernel', 'Transformer/encoder_norm/scale'):
    np.testing.assert_array_equal(flat[name], old[name])
  # The model rebuilt from the new config has exactly these shapes.
  assert jax.tree.map(np.shape, models.param_shapes(new_config)) == jax.tree.map(
      np.shape, new_params)
  assert student_init.kept_layers((0, 2), 4) == (0, 2)
  assert student_init.kept_layers('even', 5) == (0, 2, 4)


def test_units_kept_are_the_most_important_by_magnitude(teacher):
  config, params = teacher
  flat = {k: np.array(v) for k, v in param_paths.flatten_with_paths(params)}
  # Make head 2 and neurons 5, 7, 200 of block 1 the largest by far.
  block = 'Transformer/encoderblock_1'
  for n in ('query', 'key', 'value'):
    flat[f'{block}/MultiHeadDotProductAttention_0/{n}/kernel'][:, 2] *= 50
  flat[f'{block}/MlpBlock_0/Dense_0/kernel'][:, [5, 7, 200]] *= 50
  params = param_paths.tree_from_flat(flat, like=params)
  spec = _spec(layers=(0, 1), num_heads=(2, 1), mlp_dim=3)
  new_params, new_config = student_init.init_student(params, config, spec)
  t = new_config.transformer
  assert tuple(t.num_heads) == (2, 1) and tuple(t.mlp_dim) == (3, 3)
  assert t.head_dim == 16
  new = dict(param_paths.flatten_with_paths(new_params))
  np.testing.assert_array_equal(
      new['Transformer/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel'],
      flat[f'{block}/MultiHeadDotProductAttention_0/query/kernel'][:, [2]])
  np.testing.assert_array_equal(
      new['Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel'],
      flat[f'{block}/MlpBlock_0/Dense_1/kernel'][[5, 7, 200]])
  assert new['Transformer/encoderblock_0/MultiHeadDotProductAttention_0/out/kernel'
             ].shape == (2, 16, 64)
  images = np.zeros((1, 8, 8, 3), np.float32)
  assert _logits(new_config, new_params, images).shape == (1, 10)


def test_bad_specs_name_the_key(teacher):
  config, params = teacher
  with pytest.raises(ValueError, match='student_init.layers'):
    student_init.init_student(params, config, _spec(layers=(0, 4)))
  with pytest.raises(ValueError, match='student_init.num_heads'):
    student_init.init_student(params, config, _spec(layers='odd', num_heads=(1, 2, 3)))
  with pytest.raises(ValueError, match='has 4'):
    student_init.init_student(params, config, _spec(num_heads=5))


@pytest.mark.slow
def test_trainer_builds_the_student_from_init_from(digits_data_dir, tmp_path,
                                                   teacher):
  """config.init_from + config.student_init: the trainer's model and first
  parameters are the teacher's kept layers and units (lr 0: nothing moves)."""
  from tests.helpers.train_helpers import digits_config
  from vit_compress import checkpoint
  from vit_compress import train
  config, params = teacher
  checkpoint.save_model(str(tmp_path / 'teacher'), params, config)
  spec = {'layers': (1, 3), 'num_heads': 2, 'mlp_dim': (64, 32)}
  run = digits_config(digits_data_dir, model='Micro_2', total_steps=1,
                      init_from=str(tmp_path / 'teacher'), student_init=spec)
  run.schedule.base_lr, run.schedule.warmup_steps = 0.0, 0
  train.train_and_evaluate(run, str(tmp_path / 'student'))
  saved_config, saved = checkpoint.load_model(str(tmp_path / 'student' / 'model'))
  expected, expected_config = student_init.init_student(params, config, _spec(**spec))
  assert tuple(saved_config.transformer.num_heads) == (2, 2)
  assert tuple(saved_config.transformer.mlp_dim) == (64, 32)
  assert saved_config.transformer.num_layers == 2
  jax.tree.map(np.testing.assert_array_equal, saved, expected)
  saved_dict = saved_config.to_dict()
  assert saved_dict.pop('inference')['dataset'] == 'digits'   # training adds it
  assert saved_dict == expected_config.to_dict()


@pytest.mark.slow
def test_mixup_view_is_shared_by_teacher_and_student(digits_data_dir, tmp_path,
                                                     teacher, monkeypatch):
  """config.mixup in the step: the student and the teacher get the same mixed
  images, which are a convex mix of the batch and its roll by one."""
  from tests.helpers.train_helpers import digits_config
  from vit_compress import checkpoint
  from vit_compress import train
  from vit_compress.data import mixup
  config, params = teacher
  checkpoint.save_model(str(tmp_path / 'teacher'), params, config)
  seen = []   # (who, images) in execution order
  record = lambda who: lambda x: seen.append((who, np.asarray(x)))
  original_outputs, original_mix = train.model_outputs, mixup.mix

  def outputs(module, model_config, p, batch, *, train, image_key='image', **kw):
    who = 'student' if train else 'other'
    jax.debug.callback(record(who), batch[image_key])
    return original_outputs(module, model_config, p, batch, train=train,
                            image_key=image_key, **kw)

  def mix(rng, batch, cfg):
    jax.debug.callback(record('raw'), batch['image'])
    return original_mix(rng, batch, cfg)
  monkeypatch.setattr(train, 'model_outputs', outputs)
  monkeypatch.setattr(mixup, 'mix', mix)
  run = digits_config(digits_data_dir, model='Micro_2', total_steps=1, loss='kd',
                      **{'teacher.checkpoint': str(tmp_path / 'teacher'),
                         'mixup.p': 1.0})
  run.schedule.warmup_steps = 0
  train.train_and_evaluate(run, str(tmp_path / 'student'))
  i = next(j for j, (who, _) in enumerate(seen) if who == 'raw')
  (_, raw), (who_s, student), (who_t, teacher_view) = seen[i:i + 3]
  assert (who_s, who_t) == ('student', 'other')
  np.testing.assert_array_equal(student, teacher_view)
  assert not np.allclose(student, raw)
  # Each mixed image is w * x_i + (1 - w) * x_{i-1} for one w in [0.5, 1].
  partner = np.roll(raw, 1, axis=0)
  w = np.sum((student - partner) * (raw - partner)) / np.sum((raw - partner) ** 2)
  assert 0.5 <= w <= 1.0
  np.testing.assert_allclose(student, w * raw + (1 - w) * partner, atol=1e-5)
