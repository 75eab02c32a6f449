"""Token merging (ToMe): bipartite soft matching, proportional attention, the ViT option."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_compress import models
from vit_compress import zoo
from vit_compress.models import tome
from vit_compress.models import vit

from tests.helpers import tiny_task


# Jitted once per (r, num_prefix): one compile beats op-by-op dispatch.
merge_tokens = jax.jit(tome.merge_tokens, static_argnums=(3, 4))


def reference_merge(x, size, metric, r, num_prefix):
  """ToMe's bipartite soft matching, one example at a time with plain loops."""
  out_x, out_size = [], []
  for xb, sb, mb in zip(np.asarray(x, np.float64), np.asarray(size, np.float64),
                        np.asarray(metric, np.float64)):
    prefix_x, rest_x = xb[:num_prefix], xb[num_prefix:]
    prefix_s, rest_s = sb[:num_prefix], sb[num_prefix:]
    m = mb[num_prefix:] / np.linalg.norm(mb[num_prefix:], axis=-1, keepdims=True)
    a, b = list(range(0, len(rest_x), 2)), list(range(1, len(rest_x), 2))
    r = min(r, len(rest_x) // 2)
    best = {i: max(b, key=lambda j: m[i] @ m[j]) for i in a}  # first max on ties
    score = {i: m[i] @ m[best[i]] for i in a}
    merged = sorted(a, key=lambda i: -score[i])[:r]
    total_x = {j: rest_x[j] * rest_s[j] for j in b}
    total_s = {j: rest_s[j].copy() for j in b}
    for i in merged:
      total_x[best[i]] = total_x[best[i]] + rest_x[i] * rest_s[i]
      total_s[best[i]] = total_s[best[i]] + rest_s[i]
    kept = [i for i in a if i not in merged]
    new_x = [rest_x[i] for i in kept] + [total_x[j] / total_s[j] for j in b]
    new_s = [rest_s[i] for i in kept] + [total_s[j] for j in b]
    out_x.append(np.concatenate([prefix_x, np.stack(new_x)]))
    out_size.append(np.concatenate([prefix_s, np.stack(new_s)]))
  return np.stack(out_x), np.stack(out_size)


def random_tokens(seed, batch=3, tokens=12, dim=8):
  kx, km, ks = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (batch, tokens, dim))
  metric = jax.random.normal(km, (batch, tokens, dim))
  size = jax.random.randint(ks, (batch, tokens, 1), 1, 4).astype(jnp.float32)
  return x, size, metric


@pytest.mark.parametrize('tokens,r,num_prefix', [(12, 3, 1), (13, 4, 2), (9, 10, 1)])
def test_merge_matches_reference(tokens, r, num_prefix):
  x, size, metric = random_tokens(0, tokens=tokens)
  new_x, new_size = merge_tokens(x, size, metric, r, num_prefix)
  want_x, want_size = reference_merge(x, size, metric, r, num_prefix)
  expected_count = tome.merged_token_counts(tokens, num_prefix, [r])[0]
  assert new_x.shape == (3, expected_count, 8) == want_x.shape
  np.testing.assert_allclose(new_x, want_x, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(new_size, want_size)
  # Merging moves mass, it does not create or lose any.
  np.testing.assert_allclose((new_x * new_size).sum(1), (x * size).sum(1),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(new_size.sum(1), size.sum(1))


def test_prefix_tokens_are_never_merged():
  x, size, metric = random_tokens(1, tokens=11)
  size = size.at[:, :2].set(1.0)
  # Make the prefix tokens the best match of everything: still left alone.
  metric = metric.at[:, :2].set(metric[:, 2:3])
  new_x, new_size = merge_tokens(x, size, metric, 4, 2)
  np.testing.assert_array_equal(new_x[:, :2], x[:, :2])
  np.testing.assert_array_equal(new_size[:, :2], 1.0)


def test_r0_returns_the_input():
  x, size, metric = random_tokens(2)
  new_x, new_size = tome.merge_tokens(x, size, metric, 0, 1)
  np.testing.assert_array_equal(new_x, x)
  np.testing.assert_array_equal(new_size, size)


def test_proportional_attention_equals_duplicated_tokens():
  """A token of size 2 attends and is attended like two identical tokens."""
  attention = vit.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  x = jax.random.normal(jax.random.key(3), (2, 5, 8))
  params = attention.init(jax.random.key(4), x, deterministic=True)
  duplicated = jnp.concatenate([x[:, :3], x[:, 2:]], axis=1)  # token 2 twice
  size = jnp.ones((2, 5, 1)).at[:, 2].set(2.0)
  apply = jax.jit(lambda x, size: attention.apply(params, x, deterministic=True,
                                                  size=size)[0])
  out, want = apply(x, size), apply(duplicated, None)
  np.testing.assert_allclose(out, want[:, [0, 1, 2, 4, 5]], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def nano_params():
  """Initial Nano_2 parameters (ToMe adds none), with and without DeiT token."""
  def init(**overrides):
    config = zoo.get('Nano_2', **overrides)
    return jax.jit(lambda key: models.init(config, key))(jax.random.key(0))
  return {False: init(), True: init(distill_token=True)}


def block_outputs(config, params, images):
  """{layer: (tokens, sizes)} of each encoder block, via captured intermediates."""
  model = models.build(config)
  _, state = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, capture_intermediates=True, mutable=['intermediates']))(
          params, images)
  blocks = state['intermediates']['Transformer']
  return {i: blocks[f'encoderblock_{i}']['__call__'][0]
          for i in range(config.transformer.num_layers)}


@pytest.mark.parametrize('tome_r,distill', [(4, False), ((6, 6), False), ((0, 3), True)])
def test_token_counts_after_each_layer(tome_r, distill, nano_params):
  config = zoo.get('Nano_2', tome_r=tome_r, distill_token=distill)
  params = nano_params[distill]
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  num_prefix = 2 if distill else 1
  r = vit.per_layer(tome_r, 2, 'tome_r')
  counts = tome.merged_token_counts(17 + num_prefix - 1, num_prefix, r)
  outputs = block_outputs(config, params, images)
  for layer, (x, size) in outputs.items():
    assert x.shape == (2, counts[layer], 32)
    if size is not None:
      assert size.shape == (2, counts[layer], 1)
      np.testing.assert_array_equal(size.sum(1), 16 + num_prefix)  # every patch kept
      np.testing.assert_array_equal(size[:, :num_prefix], 1.0)  # prefix unmerged
  assert counts == {4: [13, 9], (6, 6): [11, 6], (0, 3): [18, 15]}[tome_r]


def test_r0_is_the_plain_model_and_unit_sizes_change_nothing(nano_params):
  plain = zoo.get('Nano_2')
  params = nano_params[False]
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  plain_out = block_outputs(plain, params, images)
  zero = block_outputs(zoo.get('Nano_2', tome_r=(0, 0)), params, images)
  late = block_outputs(zoo.get('Nano_2', tome_r=(0, 4)), params, images)
  np.testing.assert_array_equal(zero[1][0], plain_out[1][0])
  # Layer 0 of a model merging only later runs with sizes of 1: same result.
  np.testing.assert_allclose(late[0][0], plain_out[0][0], rtol=1e-6, atol=1e-6)


def test_remat_gives_the_same_logits(nano_params):
  config = zoo.get('Nano_2', tome_r=3)
  params = nano_params[False]
  images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  remat = zoo.get('Nano_2', tome_r=3, remat=True)
  np.testing.assert_allclose(
      tiny_task.logits(models.build(config), params, images),
      tiny_task.logits(models.build(remat), params, images), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_merging_at_inference_on_a_trained_model():
  config, params, eval_fn = tiny_task.trained_nano()
  float_acc = eval_fn(models.build(config), params)
  # No new parameters: the trained weights run with merging as they are.
  merged_acc = eval_fn(models.build(zoo.get('Nano_2', tome_r=4)), params)
  assert merged_acc >= float_acc - 2, (float_acc, merged_acc)


@pytest.mark.slow
def test_training_with_merging():
  """Gradients flow through merged tokens: a short fine-tune with merging
  (r=4: 17 -> 13 -> 9 tokens) recovers most of the accuracy merging cost."""
  config, params, eval_fn = tiny_task.trained_nano()
  float_acc = eval_fn(models.build(config), params)
  tome_model = models.build(zoo.get('Nano_2', tome_r=4))
  before = eval_fn(tome_model, params)
  tuned = tiny_task.train(tome_model, params, steps=100, lr=0.02, seed=11)
  after = eval_fn(tome_model, tuned)
  assert after > before and after >= float_acc - 3, (float_acc, before, after)
