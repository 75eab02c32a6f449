"""Quantization through the trainer and on a digits-trained model."""
import numpy as np

from train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import eval as eval_lib
from vit_compress import train
from vit_compress.compress import quantize


def test_qat_in_the_trainer_then_int4_model_scores_the_same(digits_data_dir,
                                                            tmp_path):
  steps = dict(total_steps=300, checkpoint_every=300)
  float_metrics = train.train_and_evaluate(
      digits_config(digits_data_dir, 'Nano_2', **steps,
                    **{'schedule.base_lr': 0.003}), str(tmp_path / 'float'))
  config = digits_config(digits_data_dir, 'Nano_2', **steps,
                         **{'quant.mode': 'qat', 'quant.weight_dtype': 'int4',
                            'schedule.base_lr': 0.003})
  qat_metrics = train.train_and_evaluate(config, str(tmp_path / 'qat'))
  model_config, params = checkpoint.load_model(str(tmp_path / 'qat' / 'model'))

  config = train.prepare(config)
  qparams, qconfig = quantize.quantize(params, model_config, config.quant)
  int4 = eval_lib.accuracy(quantize.quantized_model(qconfig), qparams,
                           data.make_eval_iterator(config), top_k=(1,))
  print(f'float {float_metrics["accuracy"]:.4f}, QAT eval '
        f'{qat_metrics["accuracy"]:.4f}, int4 model {int4["top1"]:.2f} %')
  # int4 weights trained with QAT stay within a point of the float model.
  assert int4['top1'] / 100 >= float_metrics['accuracy'] - 0.01
  # The fake-quantized forward the trainer optimised is the integer model's.
  assert abs(int4['top1'] / 100 - qat_metrics['accuracy']) <= 0.005

  # ... and the integer weights are what the artifact stores.
  quantize.save_quantized(str(tmp_path / 'int4'), qparams, qconfig)
  module, reloaded, _ = quantize.load_quantized(str(tmp_path / 'int4'))
  images = next(iter(data.make_eval_iterator(config)))['image']
  np.testing.assert_allclose(module.apply({'params': reloaded}, images),
                             quantize.quantized_model(qconfig).apply(
                                 {'params': qparams}, images), atol=1e-6)
