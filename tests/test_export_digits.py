"""TFLite export of a digits-trained model, checked in the LiteRT interpreter."""
import numpy as np

from train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import export
from vit_compress import train


def test_tflite_int8_is_small_and_as_accurate_on_digits(digits_data_dir, tmp_path):
  config = digits_config(digits_data_dir, 'Mini_4', total_steps=300,
                         checkpoint_every=300,
                         **{'schedule.base_lr': 0.002, 'schedule.warmup_steps': 30})
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  model_config, params = checkpoint.load_model(str(tmp_path / 'run' / 'model'))
  config = train.prepare(config)
  eval_batches = lambda: data.make_eval_iterator(config)

  float_file = export.export_tflite(model_config, params, str(tmp_path / 'f.tflite'))
  # Representative data: training images (no test images leak into calibration).
  train_images = (np.asarray(b['image'][:1]) for b, _ in zip(
      data.make_train_iterator(config), range(100)))
  int8_file = export.export_tflite(model_config, params, str(tmp_path / 'q.tflite'),
                                   int8=True, representative_images=train_images,
                                   per_channel=False)
  ratio = float_file['bytes'] / int8_file['bytes']
  float_check = export.check_tflite(float_file['path'], model_config, params,
                                    eval_batches)
  int8_check = export.check_tflite(int8_file['path'], model_config, params,
                                   eval_batches)
  print(f'JAX top-1 {float_check["jax_top1"]:.2f} %, TFLite float '
        f'{float_check["tflite_top1"]:.2f} %, int8 {int8_check["tflite_top1"]:.2f} % '
        f'({ratio:.2f}x smaller)')
  assert float_check['count'] == int8_check['count'] == 355
  assert float_check['jax_top1'] > 90
  assert abs(float_check['top1_drop']) < 1e-9
  assert ratio >= 3.5
  assert abs(int8_check['top1_drop']) <= 0.5
