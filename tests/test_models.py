"""Model behaviour on tiny configs: shapes, per-layer widths, options that must not change results."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_compress import models
from vit_compress import zoo


def _forward(config, batch=2, seed=0, **kwargs):
  module = models.build(config)
  inputs = models.example_inputs(config, batch)
  inputs = {k: jax.random.normal(jax.random.key(seed), v.shape) if v.dtype == jnp.float32
            else v for k, v in inputs.items()}
  params = module.init(jax.random.key(1), **inputs)['params']
  return module, params, inputs


def test_vit_parameter_names_follow_vit_jax_linen():
  shapes = models.param_shapes(zoo.get('Nano_2'))
  block = shapes['Transformer']['encoderblock_0']
  assert sorted(block) == ['LayerNorm_0', 'LayerNorm_1', 'MlpBlock_0',
                           'MultiHeadDotProductAttention_0']
  attn = block['MultiHeadDotProductAttention_0']
  assert attn['query']['kernel'].shape == (32, 2, 16)  # (D, heads, D/heads)
  assert attn['out']['kernel'].shape == (2, 16, 32)    # (heads, D/heads, D)
  # 8px / patch 2 = 16 patches + class token.
  assert shapes['Transformer']['posembed_input']['pos_embedding'].shape == (1, 17, 32)
  assert shapes['cls'].shape == (1, 1, 32)
  assert shapes['head']['kernel'].shape == (32, 10)


def test_per_layer_heads_and_mlp_widths():
  config = zoo.get('Micro_2')
  config.transformer.num_heads = (4, 2, 1, 3)
  config.transformer.mlp_dim = (256, 64, 32, 8)
  config.transformer.head_dim = 16
  shapes = models.param_shapes(config)
  for i, (h, m) in enumerate(zip((4, 2, 1, 3), (256, 64, 32, 8))):
    block = shapes['Transformer'][f'encoderblock_{i}']
    assert block['MultiHeadDotProductAttention_0']['key']['kernel'].shape == (64, h, 16)
    assert block['MlpBlock_0']['Dense_0']['kernel'].shape == (64, m)
  module, params, inputs = _forward(config)
  assert module.apply({'params': params}, **inputs).shape == (2, 10)


def test_per_layer_length_mismatch_is_a_clear_error():
  config = zoo.get('Micro_2')
  config.transformer.num_heads = (4, 2)
  with pytest.raises(ValueError, match='num_heads has 2 entries.*num_layers is 4'):
    models.build(config)


def test_gap_classifier_has_no_class_token_and_representation_layer():
  config = zoo.get('Nano_2')
  config.classifier = 'gap'
  config.representation_size = 24
  shapes = models.param_shapes(config)
  assert 'cls' not in shapes
  assert shapes['Transformer']['posembed_input']['pos_embedding'].shape == (1, 16, 32)
  assert shapes['pre_logits']['kernel'].shape == (32, 24)
  module, params, inputs = _forward(config)
  assert module.apply({'params': params}, **inputs).shape == (2, 10)


def test_remat_and_bfloat16_keep_results():
  config = zoo.get('Nano_2')
  module, params, inputs = _forward(config)
  # Non-zero head so logits are informative (the head is zero-initialised).
  params = jax.tree_util.tree_map(lambda x: x, params)
  params['head']['kernel'] = jax.random.normal(jax.random.key(3), params['head']['kernel'].shape)
  reference = module.apply({'params': params}, **inputs)
  config.remat = True
  remat_out = models.build(config).apply({'params': params}, **inputs)
  np.testing.assert_allclose(remat_out, reference, atol=1e-6)
  config.remat = False
  config.dtype = 'bfloat16'
  bf16 = models.build(config).apply({'params': params}, **inputs)
  assert bf16.dtype == jnp.float32  # logits are returned in float32
  np.testing.assert_allclose(bf16, reference, atol=0.15, rtol=0.05)
  assert not np.allclose(bf16, reference, atol=1e-6)  # it really ran in bf16


def test_dropout_and_stochastic_depth_only_in_training():
  config = zoo.get('Nano_2')
  config.transformer.dropout_rate = 0.2
  config.transformer.stochastic_depth = 0.5
  config.transformer.attention_dropout_rate = 0.2
  module, params, inputs = _forward(config)
  params['head']['kernel'] = jnp.ones_like(params['head']['kernel'])
  eval1 = module.apply({'params': params}, **inputs)
  eval2 = module.apply({'params': params}, **inputs)
  np.testing.assert_array_equal(eval1, eval2)
  train = lambda seed: module.apply({'params': params}, **inputs, train=True,
                                    rngs={'dropout': jax.random.key(seed)})
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(train(0), train(0))


def test_distillation_token_two_heads():
  config = zoo.get('Nano_2')
  config.distill_token = True
  module, params, inputs = _forward(config)
  assert params['dist'].shape == (1, 1, 32)
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 18, 32)
  params['head']['kernel'] = jax.random.normal(jax.random.key(4), (32, 10))
  params['head_dist']['kernel'] = jax.random.normal(jax.random.key(5), (32, 10))
  logits, dist_logits = module.apply({'params': params}, **inputs, train=True)
  averaged = module.apply({'params': params}, **inputs)
  np.testing.assert_allclose(averaged, (logits + dist_logits) / 2, atol=1e-6)
  assert not np.allclose(logits, dist_logits)


def test_hybrid_stem_names_and_grid():
  config = zoo.get('R_Nano_2')  # 16px: root conv /2, max-pool /2 -> 4x4, patch 2 -> 2x2
  shapes = models.param_shapes(config)
  assert shapes['conv_root']['kernel'].shape == (7, 7, 3, 32)
  assert shapes['gn_root']['scale'].shape == (32,)
  unit = shapes['block1']['unit1']
  assert sorted(unit) == ['conv1', 'conv2', 'conv3', 'conv_proj',
                          'gn1', 'gn2', 'gn3', 'gn_proj']
  assert shapes['embedding']['kernel'].shape == (2, 2, 128, 32)
  assert shapes['Transformer']['posembed_input']['pos_embedding'].shape == (1, 5, 32)
  module, params, inputs = _forward(config)
  assert module.apply({'params': params}, **inputs).shape == (2, 10)


def test_mixer_forward_and_names():
  config = zoo.get('Mixer_Nano_2')
  module, params, inputs = _forward(config)
  assert sorted(params) == ['MixerBlock_0', 'MixerBlock_1', 'head',
                            'pre_head_layer_norm', 'stem']
  assert params['MixerBlock_0']['token_mixing']['Dense_0']['kernel'].shape == (16, 32)
  assert module.apply({'params': params}, **inputs).shape == (2, 10)


@pytest.mark.parametrize('text_model', ['text_transformer', 'bert'])
def test_lit_returns_normalized_embeddings_and_logits(text_model):
  config = zoo.get('LiT_Nano')
  if text_model == 'bert':
    config.text_model = 'bert'
    config.text = {'width': 32, 'num_layers': 2, 'num_heads': 2, 'mlp_dim': 64,
                   'vocab_size': 260, 'max_position': 16, 'type_vocab_size': 2}
  module = models.build(config)
  images = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
  tokens = jax.random.randint(jax.random.key(1), (5, 16), 1, 260)
  params = module.init(jax.random.key(2), images, tokens)['params']
  assert sorted(params) == ['img', 't', 'txt']
  out = module.apply({'params': params}, images, tokens)
  assert out['zimg'].shape == (3, 32) and out['ztxt'].shape == (5, 32)
  np.testing.assert_allclose(jnp.linalg.norm(out['zimg'], axis=-1), 1, atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out['ztxt'], axis=-1), 1, atol=1e-5)
  assert out['logits'].shape == (3, 5)
  assert float(out['t']) == pytest.approx(1.0)  # exp(0)
  np.testing.assert_allclose(out['logits'], out['zimg'] @ out['ztxt'].T, atol=1e-6)
  # One side alone (zero-shot embeds class names once, images many times).
  only_text = module.apply({'params': params}, tokens=tokens)
  np.testing.assert_allclose(only_text['ztxt'], out['ztxt'], atol=1e-6)
  assert 'logits' not in only_text


def test_unknown_family_is_listed():
  config = zoo.get('Nano_2')
  config.family = 'vitt'
  with pytest.raises(KeyError, match="Did you mean 'vit'"):
    models.build(config)
