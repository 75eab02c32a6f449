"""Distillation through the trainer: a kd student beats the label-only student."""
from configs import distill
from train_helpers import digits_config
from vit_compress import train


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
