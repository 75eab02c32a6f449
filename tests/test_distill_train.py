"""Distillation through the trainer: a kd student beats the label-only student."""
import pytest

from configs import distill
from tests.helpers.train_helpers import digits_config
from vit_compress import train

pytestmark = pytest.mark.slow   # integration: see pytest.ini


def test_distilled_student_beats_label_only_student(digits_data_dir, tmp_path):
  teacher = digits_config(
      digits_data_dir, 'Micro_2', total_steps=500, checkpoint_every=500,
      pp_train=distill.DIGITS_PP_TRAIN, pp_eval=distill.DIGITS_PP_EVAL,
      **{'schedule.base_lr': 0.003, 'schedule.warmup_steps': 50})
  teacher_metrics = train.train_and_evaluate(teacher, str(tmp_path / 'teacher'))

  def student(loss):
    config = distill.get_config('Nano_2,digits')
    config.data_dir = digits_data_dir
    config.teacher.checkpoint = str(tmp_path / 'teacher' / 'model')
    config.loss = loss
    return train.train_and_evaluate(config, str(tmp_path / loss))['accuracy']

  distilled, labels_only = student('kd'), student('softmax_xent')
  print(f'teacher {teacher_metrics["accuracy"]:.4f}, student kd {distilled:.4f}, '
        f'labels only {labels_only:.4f}')
  assert teacher_metrics['accuracy'] > 0.95
  assert distilled > labels_only + 0.01


def test_deit_token_and_feature_distillation_train(digits_data_dir, tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_compress import checkpoint  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(
      digits_config(digits_data_dir, 'Micro_2', total_steps=60,
                    checkpoint_every=60, **{'schedule.base_lr': 0.003}),
      str(tmp_path / 'teacher'))

  def student(loss, **overrides):
    config = distill.get_config('Nano_2,digits')
    config.data_dir = digits_data_dir
    config.pp_train = config.pp_eval = 'decode|to_rgb|value_range(-1, 1)|onehot'
    config.teacher.checkpoint = str(tmp_path / 'teacher' / 'model')
    config.loss = loss
    config.total_steps = config.eval_every = config.checkpoint_every = 60
    for key, value in overrides.items():
      section, name = key.split('.')
      config[section][name] = value
    metrics = train.train_and_evaluate(config, str(tmp_path / loss))
    return metrics, checkpoint.load_model(str(tmp_path / loss / 'model'))[1]

  # DeiT: a distillation token and a second head trained on the teacher.
  metrics, params = student('deit', **{'model.distill_token': True})
  assert np.isfinite(metrics['train_loss']) and metrics['accuracy'] > 0.3
  assert params['dist'].shape == (1, 1, 32)
  assert np.abs(params['head_dist']['kernel']).max() > 0

  # Feature matching between widths 32 and 64 through a learned projection.
  pairs = (('Transformer/encoderblock_1', 'Transformer/encoderblock_3'),)
  metrics, _ = student('feature', **{'distill.feature_pairs': pairs,
                                     'distill.feature_weight': 0.1})
  assert np.isfinite(metrics['train_loss']) and metrics['accuracy'] > 0.2
