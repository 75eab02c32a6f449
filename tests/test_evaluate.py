"""Eval module: exact counting with padding, agreement, zero-shot math, measured profile."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers.params import random_params
from vit_compress import checkpoint
from vit_compress import evaluation
from vit_compress import models
from vit_compress import zoo
from vit_compress.data import tokenizers
from vit_compress.evaluation import profiling as profile_lib


def _init(config, seed=0):
  """Parameters, initialised in one compiled call (eager init is slow on CPU)."""
  return jax.jit(lambda rng: models.init(config, rng))(jax.random.key(seed))


def _linear_model(num_classes=10, seed=0):
  w = np.random.default_rng(seed).normal(size=(8 * 8 * 3, num_classes)).astype(np.float32)
  return lambda params, images: images.reshape(images.shape[0], -1) @ params, w


def _split(images, labels, batch_size):
  """Batches as the eval pipeline makes them: the last one padded, mask 0."""
  out = []
  for start in range(0, len(images), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(x)
    mask = np.concatenate([np.ones(len(x)), np.zeros(pad)]).astype(np.float32)
    # Padding examples are copies of real ones, so counting them would show.
    x = np.concatenate([x, images[:pad]])
    y = np.concatenate([y, labels[:pad]])
    out.append({'image': x, 'label': y, 'mask': mask})
  return out


def _data(n=203, num_classes=10, seed=1):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
  return images, rng.integers(0, num_classes, size=n).astype(np.int32)


def _numpy_metrics(logits, labels):
  order = np.argsort(-logits, axis=-1)
  top1 = 100 * np.mean(order[:, 0] == labels)
  top5 = 100 * np.mean(np.any(order[:, :5] == labels[:, None], axis=-1))
  shifted = logits - logits.max(-1, keepdims=True)
  logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return top1, top5, -np.mean(logp[np.arange(len(labels)), labels])


def test_accuracy_counts_every_real_example_once():
  apply_fn, w = _linear_model()
  images, labels = _data()
  metrics = evaluation.accuracy(apply_fn, w, _split(images, labels, 32))
  top1, top5, loss = _numpy_metrics(images.reshape(len(images), -1) @ w, labels)
  assert metrics['count'] == 203
  assert metrics['top1'] == pytest.approx(top1, abs=1e-9)
  assert metrics['top5'] == pytest.approx(top5, abs=1e-9)
  assert metrics['loss'] == pytest.approx(loss, rel=1e-5)
  assert 0 < metrics['top1'] < metrics['top5'] < 100


def test_multi_hot_labels_give_the_same_numbers_as_int_labels():
  apply_fn, w = _linear_model()
  images, labels = _data()
  int_batches = _split(images, labels, 64)
  hot_batches = [{'image': b['image'], 'mask': b['mask'],
                  'labels': np.eye(10, dtype=np.float32)[b['label']]} for b in int_batches]
  a = evaluation.accuracy(apply_fn, w, int_batches)
  b = evaluation.accuracy(apply_fn, w, hot_batches)
  assert a == pytest.approx(b)


def test_top5_is_left_out_with_five_classes_or_fewer():
  apply_fn, w = _linear_model(num_classes=5)
  images, labels = _data(num_classes=5)
  metrics = evaluation.accuracy(apply_fn, w, _split(images, labels, 50))
  assert 'top5' not in metrics and metrics['count'] == 203


def test_flax_module_and_registry():
  config = zoo.get('Nano_2')
  module = models.build(config)
  params = _init(config)
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), params['head']['kernel'].shape)
  images, labels = _data(n=40)
  logits = np.asarray(jax.jit(module.apply)({'params': params}, images))
  run = evaluation.EVALUATORS.get('classification')
  metrics = run(module, params, _split(images, labels, 16))
  assert metrics['top1'] == pytest.approx(_numpy_metrics(logits, labels)[0])
  with pytest.raises(KeyError, match="Did you mean 'classification'"):
    evaluation.EVALUATORS.get('clasification')
  assert evaluation.EVALUATORS.names() == ['agreement', 'classification', 'profile', 'zero_shot']


def test_bad_batches_and_models_are_named():
  apply_fn, w = _linear_model()
  images, labels = _data(n=8)
  with pytest.raises(ValueError, match="'label'"):
    evaluation.accuracy(apply_fn, w, [{'image': images}])
  with pytest.raises(ValueError, match='padding'):
    evaluation.accuracy(apply_fn, w, [{'image': images, 'label': labels,
                                     'mask': np.zeros(8, np.float32)}])
  lit = zoo.get('LiT_Nano')
  lit_params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), models.param_shapes(lit))
  with pytest.raises(ValueError, match='zero_shot'):  # raised while tracing
    evaluation.accuracy(models.build(lit), lit_params,
                      [{'image': images, 'label': labels}])


def test_agreement_with_a_teacher():
  apply_fn, w = _linear_model()
  images, labels = _data()
  batches = _split(images, labels, 32)
  same = evaluation.agreement(apply_fn, w, batches, teacher=apply_fn, teacher_params=w)
  assert same['agreement'] == 100.0 and same['top1'] == same['teacher_top1']
  # A student whose classes 0 and 1 are swapped disagrees exactly where the
  # teacher predicts 0 or 1.
  student_w = w[:, [1, 0] + list(range(2, 10))]
  result = evaluation.agreement(apply_fn, student_w, batches, teacher=apply_fn,
                              teacher_params=w)
  teacher_pred = np.argmax(images.reshape(len(images), -1) @ w, -1)
  assert result['agreement'] == pytest.approx(100 * np.mean(teacher_pred > 1))
  assert result['teacher_top1'] == pytest.approx(evaluation.accuracy(apply_fn, w, batches)['top1'])
  assert result['top1'] == pytest.approx(evaluation.accuracy(apply_fn, student_w, batches)['top1'])
  assert result['count'] == 203


# ------------------------------------------------------------------ zero-shot
def test_zero_shot_classifier_matches_a_direct_computation():
  config = zoo.get('LiT_Nano')
  module = models.build(config)
  params = random_params(config, scale=0.3)  # without compiling an init
  tokenize = tokenizers.get_tokenizer('bytes', config.max_len)
  names, templates = ['zero', 'one', 'two'], ('a photo of {}.', 'the digit {}')
  classifier = np.asarray(evaluation.zero_shot_classifier(
      module, params, names, templates, tokenize))
  embed_one = jax.jit(lambda p, t: module.apply({'params': p}, tokens=t)['ztxt'][0])
  expected = []
  for name in names:
    rows = []
    for template in templates:
      z = np.asarray(embed_one(params, tokenize([template.format(name)])))
      rows.append(z / np.linalg.norm(z))
    mean = np.mean(rows, axis=0)
    expected.append(mean / np.linalg.norm(mean))
  np.testing.assert_allclose(classifier, np.stack(expected), atol=1e-5)
  # Averaging matters: the classifier is not any single template's embedding.
  assert np.abs(classifier[-1] - rows[0]).max() > 1e-3


class _BagOfBytes(nn.Module):
  """A two-tower model with known behaviour: text = sum of byte embeddings,
  image = its first `dim` pixel values."""
  dim: int = 16

  @nn.compact
  def __call__(self, images=None, tokens=None):
    table = self.param('table', nn.initializers.normal(1.0), (260, self.dim))
    out = {}
    if images is not None:
      z = images.reshape(images.shape[0], -1)[:, :self.dim]
      out['zimg'] = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    if tokens is not None:
      z = jnp.sum(table[tokens] * (tokens > 1)[..., None], axis=1)
      out['ztxt'] = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    return out


def test_zero_shot_accuracy_on_a_model_with_known_answers():
  model = _BagOfBytes()
  params = model.init(jax.random.key(0), tokens=np.ones((1, 16), np.int32))['params']
  table = np.asarray(params['table'])
  names = [str(d) for d in range(10)]
  templates = ['{}', 'digit {}']
  tokenize = tokenizers.get_tokenizer('bytes', 16)
  # What each class's row must be, computed from the table directly.
  rows = []
  for name in names:
    z = [table[[b + 2 for b in t.format(name).encode()]].sum(0) for t in templates]
    z = np.mean([v / np.linalg.norm(v) for v in z], axis=0)
    rows.append(z / np.linalg.norm(z))
  # Image n shows class n % 10 (its row, scaled); 13 of 60 are mislabelled.
  labels = np.arange(60) % 10
  images = np.zeros((60, 8, 8, 3), np.float32)
  images.reshape(60, -1)[:, :16] = np.stack(rows)[labels] * 3.0
  wrong = labels.copy()
  wrong[:13] = (wrong[:13] + 1) % 10
  batches = _split(images, wrong.astype(np.int32), 16)
  metrics = evaluation.EVALUATORS.get('zero_shot')(
      model, params, batches, class_names=names, templates=templates,
      tokenize_fn=tokenize)
  assert metrics['count'] == 60
  assert metrics['top1'] == pytest.approx(100 * 47 / 60)
  assert 'loss' not in metrics


# -------------------------------------------------------------------- profile
def _nano_with_zeros():
  config = zoo.get('Nano_2')
  params = _init(config)
  kernel = np.array(params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel'])
  kernel[:, :50] = 0.0  # 50 pruned neurons
  params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel'] = kernel
  return config, params


def test_profile_counts_bytes_and_flops(tmp_path):
  config, params = _nano_with_zeros()
  module = models.build(config)
  cost = evaluation.profile(module, params, image_shape=(8, 8, 3),
                          batch_sizes=(1, 8), repeats=2, min_run_s=0.005)
  leaves = jax.tree.leaves(params)
  zeros = sum(int(np.sum(np.asarray(x) == 0)) for x in leaves)
  assert cost['params'] == models.count_params(params) == 26_794
  assert cost['nonzero_params'] == cost['params'] - zeros
  assert zeros >= 32 * 50  # the pruned neurons (plus zero-initialised heads)
  assert cost['bytes'] == 4 * 26_794 and cost['bytes_source'] == 'arrays in memory'
  # Matmul FLOPs of Nano_2 by hand (17 tokens, width 32, MLP 128, 16 patches
  # of 2x2x3); XLA adds LayerNorm, softmax, GELU and biases on top.
  n, d, m = 17, 32, 128
  per_block = 2 * n * d * d * 4 + 2 * 2 * n * d * m + 2 * 2 * n * n * d
  matmuls = 2 * per_block + 2 * 16 * 12 * d + 2 * d * 10
  assert matmuls <= cost['flops'] <= 1.3 * matmuls
  assert cost['batch_size'] == 8 and cost['img_per_s'] == cost['img_per_s_b8'] > 0
  assert cost['img_per_s_b1'] == pytest.approx(1e3 / cost['latency_ms_b1'])
  assert cost['compiled_bytes'] >= cost['bytes']  # the weights are arguments
  assert cost['peak_bytes'] is None or cost['peak_bytes'] > 0
  # With an artifact, bytes are what the files take on disk.
  checkpoint.save_model(str(tmp_path / 'm'), params, config)
  on_disk = sum(os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(tmp_path / 'm') for f in files)
  assert profile_lib.artifact_bytes(str(tmp_path / 'm')) == on_disk
  npz = tmp_path / 'm.npz'
  checkpoint.export_npz(str(npz), params)
  assert profile_lib.artifact_bytes(str(npz)) == os.path.getsize(npz)


def test_profile_of_a_quantized_model_counts_logical_weights():
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  config, params = _nano_with_zeros()
  qparams, qconfig = quantize.quantize(params, config, {'mode': 'ptq'})
  total, nonzero = profile_lib.count_params(qparams)
  assert total == models.count_params(params)
  # Zero weights stay zero integers; a few small ones round to zero too.
  assert nonzero <= profile_lib.count_params(params)[1]
  held = profile_lib.held_bytes(qparams)
  assert held == quantize.size_report(qparams)['model_bytes']
  assert held < 0.4 * 4 * total
  cost = evaluation.profile(quantize.quantized_model(qconfig), qparams,
                          [{'image': np.zeros((4, 8, 8, 3), np.float32)}],
                          batch_sizes=(4,), repeats=1, min_run_s=0.0)
  assert cost['params'] == total and cost['bytes'] == held and cost['flops'] > 0
