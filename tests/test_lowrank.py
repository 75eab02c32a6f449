"""Low-rank factorisation of MLP kernels: ranks, exactness, size, fine-tuning, reload."""
import os

import jax
import numpy as np
import pytest

from vit_compress import checkpoint
from vit_compress import models
from vit_compress.compress import lowrank
from vit_compress.compress import quantize

from tests.helpers import tiny_task


def mlp(params, layer=0):
  return params['Transformer'][f'encoderblock_{layer}']['MlpBlock_0']


def test_energy_threshold_picks_the_rank_and_svd_is_optimal(trained):
  config, params, _ = trained
  # A (32, 128) kernel with singular values 8, 4, 2, 1, 0.5, ...: squared,
  # 64, 16, 4, 1, ... of total 64 * 4/3 * (1 - 4**-32) ~= 85.33; the top 2 keep
  # 80/85.33 = 0.9375, the top 3 keep 84/85.33 = 0.984, so energy 0.95 -> 3.
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(32, 32)))
  v, _ = np.linalg.qr(rng.normal(size=(128, 32)))
  s = 8.0 * 0.5 ** np.arange(32)
  kernel = ((u * s) @ v.T).astype(np.float32)
  assert lowrank.rank_for_energy(s, 0.95) == 3
  params = jax.tree.map(lambda x: x, params)
  mlp(params)['Dense_0']['kernel'] = kernel
  new_params, new_config = lowrank.factorize(
      params, config, energy=0.95, params_regex=r'encoderblock_0/.*Dense_0/kernel$')
  assert new_config.transformer.lowrank.to_dict() == {'mlp_rank_0': (3, 0),
                                                      'mlp_rank_1': (0, 0)}
  a, b = mlp(new_params)['Dense_0']['kernel_a'], mlp(new_params)['Dense_0']['kernel_b']
  assert a.shape == (32, 3) and b.shape == (3, 128)
  # Eckart-Young: the error is exactly the discarded energy.
  error = np.sum((kernel.astype(np.float64) - a.astype(np.float64) @ b) ** 2)
  np.testing.assert_allclose(error, np.sum(s[3:] ** 2), rtol=1e-4)
  # Untouched layers are the same arrays.
  np.testing.assert_array_equal(mlp(new_params, 1)['Dense_0']['kernel'],
                                mlp(params, 1)['Dense_0']['kernel'])


def test_full_rank_factorisation_is_exact(trained):
  config, params, _ = trained
  new_params, new_config = lowrank.factorize(params, config, energy=1.0)
  assert new_config.transformer.lowrank.to_dict() == {'mlp_rank_0': (32, 32),
                                                      'mlp_rank_1': (32, 32)}
  images, _ = tiny_task.sample(32, seed=2)
  np.testing.assert_allclose(
      tiny_task.logits(models.build(new_config), new_params, images),
      tiny_task.logits(models.build(config), params, images), rtol=1e-4, atol=1e-4)


def test_half_the_mlp_parameters_and_the_report(trained):
  config, params, _ = trained
  new_params, new_config = lowrank.factorize(params, config, ratio=0.5)
  # floor(0.5 * 32 * 128 / (32 + 128)) = 12 for both kernels of both layers.
  assert new_config.transformer.lowrank.to_dict() == {'mlp_rank_0': (12, 12),
                                                      'mlp_rank_1': (12, 12)}
  before = sum(models.count_params(mlp(params, i)) for i in range(2))
  after = sum(models.count_params(mlp(new_params, i)) for i in range(2))
  saved = 4 * (32 * 128 - 12 * (32 + 128))  # four kernels
  assert before - after == saved and after - 2 * (128 + 32) <= 0.5 * (before - 2 * 160)
  report = lowrank.report(config, new_config)
  assert report['params_before'] - report['params_after'] == saved
  # XLA counts 2 FLOPs per multiply-add: per token and kernel 2*32*128
  # before, 2*12*(32+128) after; 17 tokens, four kernels.
  assert report['flops_before'] - report['flops_after'] == 17 * 4 * 2 * (
      32 * 128 - 12 * (32 + 128))


@pytest.mark.slow
def test_fine_tuning_recovers_accuracy_at_half_the_mlp_parameters(trained):
  config, params, eval_fn = trained
  float_acc = eval_fn(models.build(config), params)
  new_params, new_config = lowrank.factorize(params, config, ratio=0.5)
  model = models.build(new_config)
  tuned = tiny_task.train(model, new_params, steps=150, lr=0.02, seed=13)
  acc = eval_fn(model, tuned)
  assert acc >= float_acc - 2.0, (float_acc, eval_fn(model, new_params), acc)


def test_saved_low_rank_model_reloads_and_quantizes(trained, tmp_path):
  config, params, eval_fn = trained
  new_params, new_config = lowrank.factorize(params, config, ratio=0.5)
  checkpoint.save_model(str(tmp_path / 'lowrank'), new_params, new_config)
  loaded_config, loaded = checkpoint.load_model(str(tmp_path / 'lowrank'))
  images, _ = tiny_task.sample(16, seed=3)
  np.testing.assert_array_equal(
      tiny_task.logits(models.build(loaded_config), loaded, images),
      tiny_task.logits(models.build(new_config), new_params, images))
  # qwix quantizes both factors of a low-rank layer.
  qparams, qconfig = quantize.quantize(loaded, loaded_config, {'weight_dtype': 'int8'})
  dense = mlp(qparams)['Dense_0']
  assert all(quantize.is_quantized(dense[k]) for k in ('kernel_a', 'kernel_b'))
  float_acc = eval_fn(models.build(new_config), new_params)
  assert abs(eval_fn(quantize.quantized_model(qconfig), qparams) - float_acc) <= 1.0


def test_bad_requests_are_clear_errors(trained):
  config, params, _ = trained
  with pytest.raises(ValueError, match=r'more than min\(in, out\) = 32'):
    lowrank.factorize(params, config, ratio=2.0)
  with pytest.raises(ValueError, match=r'more than min\(in, out\) = 32'):
    lowrank.factorize(params, config, rank=40)
  with pytest.raises(ValueError, match='exactly one of'):
    lowrank.factorize(params, config, energy=0.9, ratio=0.5)
  with pytest.raises(ValueError, match='only MLP kernels'):
    lowrank.factorize(params, config, ratio=0.5, params_regex='embedding/kernel$')
  with pytest.raises(ValueError, match='matches no parameter'):
    lowrank.factorize(params, config, ratio=0.5, params_regex='Dense_7/kernel$')
  with pytest.raises(ValueError, match='rank >= 1'):
    lowrank.factorize(params, config, ratio=0.001)
  with pytest.raises(ValueError, match=r'energy=1.5 must be in \(0, 1\]'):
    lowrank.factorize(params, config, energy=1.5)


@pytest.mark.slow
def test_command_line_factorises_a_saved_model_and_never_overwrites(trained,
                                                                     tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.helpers.train_helpers import REPO, subprocess_env  # pylint: disable=g-import-not-at-top
  config, params, _ = trained
  source, out = str(tmp_path / 'float'), str(tmp_path / 'lowrank')
  checkpoint.save_model(source, params, config)
  result = lowrank.factorize_saved_model(source, out, rank=8)
  assert result['params_after'] < result['params_before']
  loaded_config, _ = checkpoint.load_model(out)
  assert loaded_config.transformer.lowrank.to_dict() == {'mlp_rank_0': (8, 8),
                                                         'mlp_rank_1': (8, 8)}
  before = sorted(os.listdir(out))
  # The command line: one error line and exit status 2, nothing overwritten.
  cli = [sys.executable, '-m', 'vit_compress.compress.lowrank', f'--model={source}',
         f'--out={out}', '--rank=4']
  result = subprocess.run(cli, env=subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1 and 'exists' in errors[0], (
      result.stderr[-2000:])
  assert 'Traceback' not in result.stderr and sorted(os.listdir(out)) == before
  # The other refusals, before anything is read or written.
  for kwargs, message in (({'rank': 4, 'ratio': 0.5}, 'exactly one of'),
                          ({'rank': 0}, 'positive integer'),
                          ({'energy': 2.0}, r'must be in \(0, 1\]')):
    with pytest.raises(ValueError, match=message):
      lowrank.factorize_saved_model(source, str(tmp_path / 'x'), **kwargs)
  with pytest.raises(FileNotFoundError, match='not a saved model'):
    lowrank.factorize_saved_model(str(tmp_path / 'none'), str(tmp_path / 'x'), rank=4)
  assert not os.path.exists(tmp_path / 'x')


def test_attention_projections_factorise_exactly_at_full_rank(trained):
  config, params, _ = trained
  new_params, new_config = lowrank.factorize(params, config, energy=1.0,
                                             params_regex=lowrank.ALL_REGEX)
  # Nano_2: width 32, 2 heads of 16: every projection is a 32 x 32 matrix.
  assert new_config.transformer.lowrank.to_dict() == {
      'mlp_rank_0': (32, 32), 'mlp_rank_1': (32, 32), 'query_rank': (32, 32),
      'key_rank': (32, 32), 'value_rank': (32, 32), 'out_rank': (32, 32)}
  att = new_params['Transformer']['encoderblock_1']['MultiHeadDotProductAttention_0']
  assert att['query']['kernel_a'].shape == (32, 32)
  assert att['query']['kernel_b'].shape == (32, 2, 16)
  assert att['out']['kernel_a'].shape == (2, 16, 32) and 'kernel' not in att['out']
  images, _ = tiny_task.sample(32, seed=2)
  np.testing.assert_allclose(
      tiny_task.logits(models.build(new_config), new_params, images),
      tiny_task.logits(models.build(config), params, images), rtol=1e-4, atol=1e-4)
  # Attention only, at half the parameters: rank floor(0.5 * 32 * 32 / 64) = 8.
  half, half_config = lowrank.factorize(params, config, ratio=0.5,
                                        params_regex=lowrank.ATTENTION_REGEX)
  assert half_config.transformer.lowrank.to_dict() == {
      'mlp_rank_0': (0, 0), 'mlp_rank_1': (0, 0), 'query_rank': (8, 8),
      'key_rank': (8, 8), 'value_rank': (8, 8), 'out_rank': (8, 8)}
  assert models.count_params(params) - models.count_params(half) == 2 * 4 * (
      32 * 32 - 8 * 64)
