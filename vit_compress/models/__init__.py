"""Models built from a model config by name: `build(zoo.get('Ti_16'))`.

`config.family` picks the builder ('vit', 'mixer', 'lit', 'mobilevit'); the builders read
only the model config, so a saved model (pruned, shrunk, quantized) rebuilds
from the config stored beside its weights. Everything else a family decides
(its call's inputs, class head, eval kind, encoders) is its adapter in
`models.families`.
"""
import re
from typing import Any, Dict, Optional

from absl import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vit_compress import param_paths
from vit_compress.models import batch_norm
from vit_compress.models import families
from vit_compress.models import lit as lit_lib
from vit_compress.models import mixer as mixer_lib
from vit_compress.models import mobilevit as mobilevit_lib
from vit_compress.models import text as text_lib
from vit_compress.models import vit as vit_lib
from vit_compress.registry import Registry

MODELS: Registry = Registry('model family')


def build(config: ml_collections.ConfigDict, **kwargs) -> nn.Module:
  """The Flax module for a model config (from `vit_compress.zoo.get`)."""
  return MODELS.get(config.family)(config, **kwargs)


@MODELS.register('vit')
def _build_vit(config, name: Optional[str] = None):
  t = config.transformer
  layers = int(t.num_layers)
  num_heads = vit_lib.per_layer(t.num_heads, layers, 'num_heads')
  if t.get('head_dim'):
    head_dim = int(t.head_dim)
  else:
    if config.hidden_size % num_heads[0]:
      raise ValueError(f'hidden_size {config.hidden_size} is not divisible by '
                       f'num_heads {num_heads[0]}; set transformer.head_dim.')
    head_dim = config.hidden_size // num_heads[0]
  mlp_dims = vit_lib.per_layer(t.mlp_dim, layers, 'mlp_dim')
  mlp_ranks = vit_lib.mlp_ranks(t.get('lowrank'), layers)
  attn_ranks = vit_lib.attention_ranks(t.get('lowrank'), layers)
  vit_lib.check_mlp_ranks(mlp_ranks, config.hidden_size, mlp_dims)
  resnet = None
  if config.get('resnet') is not None:
    resnet = {'num_layers': tuple(config.resnet.num_layers),
              'width_factor': config.resnet.width_factor}
  tome_r = config.get('tome_r', 0)
  return vit_lib.VisionTransformer(
      num_classes=config.num_classes,
      patch_size=tuple(config.patches.size),
      hidden_size=config.hidden_size,
      num_heads=num_heads,
      mlp_dim=mlp_dims,
      head_dim=head_dim,
      dropout_rate=t.get('dropout_rate', 0.0),
      attention_dropout_rate=t.get('attention_dropout_rate', 0.0),
      stochastic_depth=t.get('stochastic_depth', 0.0),
      resnet=resnet,
      classifier=config.get('classifier', 'token'),
      representation_size=config.get('representation_size'),
      distill_token=config.get('distill_token', False),
      head_zeroinit=config.get('head_zeroinit', True),
      tome_r=tome_r if isinstance(tome_r, int) else tuple(tome_r),
      mlp_ranks=mlp_ranks,
      attn_ranks=attn_ranks,
      remat=config.get('remat', False),
      posemb=config.get('posemb', 'learn'),
      scan=_scan(config, num_heads, mlp_dims, tome_r, mlp_ranks, attn_ranks),
      dtype=jnp.dtype(config.get('dtype', 'float32')),
      param_dtype=jnp.dtype(config.get('param_dtype', 'float32')),
      name=name)


def _scan(config, num_heads, mlp_dims, tome_r, mlp_ranks, attn_ranks) -> bool:
  """`config.scan`, unless the layers differ (then unrolled, and logged)."""
  if not config.get('scan', False):
    return False
  reason = vit_lib.scan_blocker(num_heads, mlp_dims, tome_r, mlp_ranks, attn_ranks)
  if reason:
    logging.info('model.scan=True but %s: the encoder runs unrolled.', reason)
    return False
  return True


@MODELS.register('mixer')
def _build_mixer(config, name: Optional[str] = None):
  return mixer_lib.MlpMixer(
      num_classes=config.num_classes, patch_size=tuple(config.patches.size),
      hidden_dim=config.hidden_dim, num_blocks=config.num_blocks,
      tokens_mlp_dim=config.tokens_mlp_dim,
      channels_mlp_dim=config.channels_mlp_dim,
      dtype=jnp.dtype(config.get('dtype', 'float32')),
      param_dtype=jnp.dtype(config.get('param_dtype', 'float32')), name=name)


@MODELS.register('mobilevit')
def _build_mobilevit(config, name: Optional[str] = None):
  tuples = ('widths', 'depths', 'strides', 'expansion', 'transformer_dims',
            'transformer_depths')
  return mobilevit_lib.MobileViT(
      num_classes=config.num_classes, stem_width=config.stem_width,
      num_features=config.num_features, patch_size=config.patch_size,
      num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
      dtype=jnp.dtype(config.get('dtype', 'float32')),
      param_dtype=jnp.dtype(config.get('param_dtype', 'float32')), name=name,
      **{k: tuple(config[k]) for k in tuples},
      **{k: tuple(config[k]) for k in ('layer_heads', 'layer_mlp_dims')
         if config.get(k) is not None})


_TEXT_MODELS = {'bert': text_lib.Bert, 'text_transformer': text_lib.TextTransformer}


@MODELS.register('lit')
def _build_lit(config, name: Optional[str] = None):
  image_config = ml_collections.ConfigDict(config.image.to_dict())
  image_config.num_classes = config.out_dim[0]
  if config.text_model not in _TEXT_MODELS:
    raise ValueError(f'Unknown text_model {config.text_model!r}; '
                     f'known: {sorted(_TEXT_MODELS)}.')
  dtypes = dict(dtype=jnp.dtype(config.get('dtype', 'float32')),
                param_dtype=jnp.dtype(config.get('param_dtype', 'float32')))
  text = _TEXT_MODELS[config.text_model](
      num_classes=config.out_dim[1], **config.text.to_dict(), **dtypes)
  return lit_lib.LiT(img=build(image_config), txt=text,
                     temperature_init=config.get('temperature_init', 0.0),
                     name=name)


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1,
                   image_size: Optional[int] = None) -> Dict[str, Any]:
  """Zero inputs of the right shapes, as keyword arguments of the model's call."""
  return families.of(config).example_inputs(config, batch_size, image_size)


def init(config: ml_collections.ConfigDict, rng: jax.Array,
         image_size: Optional[int] = None):
  """Initial parameters (the 'params' collection) for a model config."""
  model = build(config)
  return model.init(rng, **example_inputs(config, 1, image_size))['params']


def param_shapes(config: ml_collections.ConfigDict,
                 image_size: Optional[int] = None):
  """Parameter shapes (ShapeDtypeStructs) without allocating any weights."""
  return jax.eval_shape(lambda rng: init(config, rng, image_size),
                        jax.random.key(0))


def count_params(params) -> int:
  """Trainable parameters: BatchNorm running statistics are left out (they
  are buffers in PyTorch, and counts here equal the published ones)."""
  stats = re.compile(batch_norm.RUNNING_STATS)
  return sum(int(x.size) for p, x in param_paths.flatten_with_paths(params)
             if not stats.search(p))
