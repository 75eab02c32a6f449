"""Quantization through the trainer and on a digits-trained model."""
import numpy as np
import pytest

from tests.helpers.train_helpers import digits_config
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import evaluation
from vit_compress import train
from vit_compress.compress import quantize
from vit_compress.evaluation import profiling

pytestmark = pytest.mark.slow   # integration: see pytest.ini


def test_qat_in_the_trainer_then_int4_model_scores_the_same(digits_data_dir,
                                                            tmp_path):
  float_metrics = train.train_and_evaluate(
      digits_config(digits_data_dir, 'Nano_2', total_steps=300, checkpoint_every=300,
                    **{'schedule.base_lr': 0.003}), str(tmp_path / 'float'))
  # QAT as practised: fine-tuning the trained float model. (Two models trained
  # apart from scratch differ by a few of the 355 test images on their own,
  # and by which ones from one CPU to another.)
  config = digits_config(digits_data_dir, 'Nano_2', total_steps=150,
                         checkpoint_every=150, init_from=str(tmp_path / 'float' / 'model'),
                         **{'quant.mode': 'qat', 'quant.weight_dtype': 'int4',
                            'schedule.base_lr': 0.001})
  qat_metrics = train.train_and_evaluate(config, str(tmp_path / 'qat'))
  model_config, params = checkpoint.load_model(str(tmp_path / 'qat' / 'model'))

  config = train.prepare(config)
  qparams, qconfig = quantize.quantize(params, model_config, config.quant)
  int4 = evaluation.accuracy(quantize.quantized_model(qconfig), qparams,
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


def test_ptq_and_low_rank_on_a_digits_trained_model(digits_data_dir, tmp_path):
  from vit_compress.compress import lowrank  # pylint: disable=g-import-not-at-top
  base = dict(total_steps=400, checkpoint_every=400,
              **{'schedule.base_lr': 0.003, 'schedule.warmup_steps': 50})
  config = digits_config(digits_data_dir, 'Micro_2', **base)
  float_top1 = train.train_and_evaluate(config, str(tmp_path / 'float'))['accuracy']
  model_config, params = checkpoint.load_model(str(tmp_path / 'float' / 'model'))
  config = train.prepare(config)
  evaluate = lambda module, p: evaluation.accuracy(
      module, p, data.make_eval_iterator(config), top_k=(1,))['top1'] / 100

  # Weight-only int8: <= 0.5 points, and the quantized layers >= 3.5x smaller.
  qparams, qconfig = quantize.quantize(params, model_config, {'mode': 'ptq'})
  int8_top1 = evaluate(quantize.quantized_model(qconfig), qparams)
  sizes = quantize.save_quantized(str(tmp_path / 'int8'), qparams, qconfig)
  # Static W8A8, scales calibrated on training batches: <= 1 point.
  w8a8 = {'mode': 'ptq', 'act_dtype': 'int8', 'act_static': True,
          'calibration_batches': 4}
  train_batches = data.make_train_iterator(config)
  sparams, sconfig = quantize.quantize(params, model_config, w8a8,
                                       batches=train_batches)
  w8a8_top1 = evaluate(quantize.quantized_model(sconfig), sparams)
  print(f'float {float_top1:.4f}, int8 weights {int8_top1:.4f} '
        f'(layers {sizes["ratio"]:.2f}x smaller), static W8A8 {w8a8_top1:.4f}')
  assert abs(int8_top1 - float_top1) <= 0.005
  assert sizes['ratio'] >= 3.5
  assert (profiling.artifact_bytes(str(tmp_path / 'int8'))
          < 0.5 * profiling.artifact_bytes(str(tmp_path / 'float' / 'model')))
  assert w8a8_top1 >= float_top1 - 0.01

  # Low-rank MLP kernels at half their parameters, then a short fine-tune
  # through the trainer from the factorized model: within 2 points.
  lr_params, lr_config = lowrank.factorize(params, model_config, ratio=0.5)
  checkpoint.save_model(str(tmp_path / 'lowrank'), lr_params, lr_config)
  tune = digits_config(digits_data_dir, 'Micro_2', total_steps=100,
                       checkpoint_every=100, init_from=str(tmp_path / 'lowrank'),
                       **{'schedule.base_lr': 0.001, 'schedule.warmup_steps': 10})
  tune.model = lr_config
  tuned_top1 = train.train_and_evaluate(tune, str(tmp_path / 'tuned'))['accuracy']
  print(f'low-rank after fine-tune {tuned_top1:.4f}')
  assert tuned_top1 >= float_top1 - 0.02
