"""What the rest of the code needs to know about a model family, registered once.

    family = families.of(model_config)        # by `model_config.family`
    inputs = family.inputs(batch)             # the model's call, from a batch
    run_eval = evaluation.EVAL_KINDS.get(family.eval_kind)(...)

The builders live in `models.MODELS`; an adapter here says everything else a
family decides: which keyword inputs its call takes (LiT adds 'tokens'),
whether it has a class head of `num_classes` (two-tower models embed
instead, and are scored zero-shot), where its image tower's config is, how
long the encoder's token sequence is, and which transformer encoders it
builds (what structured pruning and shrink work on), and which transforms
and exports apply to it (token merging, low-rank, shrink on export, where
shrink records the kept widths). Nothing outside this module tests a
family's name; a new family registers one adapter, and `lookup` gives a
config of no registered family every field's default (a plain classifier).
"""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax.numpy as jnp
import ml_collections

from vit_compress.models import mobilevit as mobilevit_lib
from vit_compress.models import vit as vit_lib
from vit_compress.registry import Registry

Encoders = List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]


def _no_encoders(config) -> Encoders:
  del config
  return []


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family's adapter (see the module docstring)."""
  name: str
  # (config, param shapes) -> encoder sequence length, class token included.
  num_tokens: Callable[[Any, Any], int]
  # evaluation.EVAL_KINDS name of the trainer's periodic evaluation.
  eval_kind: str = 'classification'
  # False: no `num_classes` head (the model embeds; LiT).
  class_head: bool = True
  # The key of the image tower's own config (LiT: 'image'); None: the model's.
  image_tower: Optional[str] = None
  # The model's call also takes 'tokens' (B, max_len) int32.
  text_inputs: bool = False
  # config -> [(parameter prefix, heads per layer, MLP width per layer)].
  encoders: Callable[[Any], Encoders] = _no_encoders
  # config -> whether `structure.shrink` can remove its heads/neurons/layers.
  shrinkable: Callable[[Any], bool] = lambda config: False
  # True: `structure.shrink` records the kept widths per layer at the top of
  # the config (`layer_heads`, `layer_mlp_dims`, `transformer_depths`:
  # MobileViT); False: in `transformer.{num_heads, mlp_dim, num_layers}` (ViT).
  layer_widths: bool = False
  # `tome_r` (token merging between encoder blocks) applies to its encoder.
  token_merging: bool = False
  # `lowrank.factorize` can factorise its encoder's kernels.
  lowrank: bool = False
  # `export.export_artifact` shrinks it (drops masked heads/neurons) before
  # quantizing; other families are quantized as they are.
  export_shrinks: bool = False

  @property
  def zero_shot(self) -> bool:
    """Scored zero-shot: class names come with each call, matched against its
    text tower, and the model records none of its own (LiT)."""
    return self.eval_kind == 'zero_shot'

  def inputs(self, batch, image_key: str = 'image') -> Dict[str, Any]:
    """Keyword arguments of the model's call, taken from a batch dict."""
    if self.text_inputs:
      return {'images': batch[image_key], 'tokens': batch['tokens']}
    return {'images': batch[image_key]}

  def example_inputs(self, config, batch_size: int = 1,
                     image_size: Optional[int] = None) -> Dict[str, Any]:
    """Zero inputs of the right shapes, as keyword arguments of the model's call."""
    size = image_size or config.image_size
    batch = {'image': jnp.zeros((batch_size, size, size, 3), jnp.float32)}
    if self.text_inputs:
      batch['tokens'] = jnp.zeros((batch_size, config.max_len), jnp.int32)
    return self.inputs(batch)

  def image_config(self, config) -> ml_collections.ConfigDict:
    """The config with the image tower's `image_size` and `patches`."""
    return config[self.image_tower] if self.image_tower else config

  def image_config_key(self, where: str = 'config.model') -> str:
    """Where `image_config` sits, for messages ('config.model.image')."""
    return f'{where}.{self.image_tower}' if self.image_tower else where

  def image_fn(self, module) -> Callable[[Any, Any], Any]:
    """fn(params, images) -> outputs of the images alone (LiT: its image
    tower's embedding 'zimg'; what timing a model on images measures)."""
    if self.text_inputs:
      return lambda p, x: module.apply({'params': p}, images=x)['zimg']
    return lambda p, x: module.apply({'params': p}, x)


FAMILIES: Registry = Registry('model family')  # the message models.build gives


def _add(family: Family) -> Family:
  return FAMILIES.register(family.name)(family)


def get(name: str) -> Family:
  return FAMILIES.get(name)


def of(config) -> Family:
  """The adapter of a model config (`config.family`)."""
  return FAMILIES.get(config.family)


def lookup(config) -> Family:
  """`of(config)`, or PLAIN when the config names no registered family: every
  field at its default, so a hand-built config is checked as a plain image
  classifier that no family-specific transform applies to."""
  name = config.get('family')
  return FAMILIES.get(name) if name in FAMILIES else PLAIN


def can_shrink(config) -> bool:
  """Whether `structure.shrink` removes this model's heads, neurons, layers."""
  return lookup(config).shrinkable(config)


def _unregistered_tokens(config, shapes) -> int:
  del shapes
  raise ValueError(f'No model family {config.get("family")!r} is registered; '
                   f'known: {", ".join(FAMILIES.names())}.')


PLAIN = Family('(no registered family)', num_tokens=_unregistered_tokens)


# ---------------------------------------------------------------- the families
def _vit_tokens(config, shapes) -> int:
  del config
  return shapes['Transformer']['posembed_input']['pos_embedding'].shape[1]


def _vit_encoders(config) -> Encoders:
  t = config.transformer
  layers = int(t.num_layers)
  return [('Transformer', vit_lib.per_layer(t.num_heads, layers, 'num_heads'),
           vit_lib.per_layer(t.mlp_dim, layers, 'mlp_dim'))]


_add(Family('vit', num_tokens=_vit_tokens, encoders=_vit_encoders,
            shrinkable=lambda config: 'transformer' in config,
            token_merging=True, lowrank=True, export_shrinks=True))


def _mixer_tokens(config, shapes) -> int:
  del shapes
  return (config.image_size // config.patches.size[0]) ** 2


_add(Family('mixer', num_tokens=_mixer_tokens))


def _mobilevit_tokens(config, shapes) -> int:
  """The first transformer's sequence length."""
  del shapes
  s = next(i for i, d in enumerate(config.transformer_dims) if d)
  stride = 2 * math.prod(config.strides[:s + 1]) * config.patch_size
  return math.ceil(config.image_size / stride) ** 2


def _mobilevit_encoders(config) -> Encoders:
  widths = mobilevit_lib.transformer_widths(
      config.transformer_dims, config.transformer_depths, config.num_heads,
      config.mlp_ratio, config.get('layer_heads'), config.get('layer_mlp_dims'))
  return [(f'stages_{s}_{config.depths[s]}/Transformer', heads, mlp)
          for s, (heads, mlp) in enumerate(widths) if config.transformer_dims[s]]


_add(Family('mobilevit', num_tokens=_mobilevit_tokens,
            encoders=_mobilevit_encoders, shrinkable=lambda config: True,
            layer_widths=True))


def _lit_tokens(config, shapes) -> int:
  """The image tower's."""
  return of(config.image).num_tokens(config.image, shapes['img'])


_add(Family('lit', num_tokens=_lit_tokens, eval_kind='zero_shot',
            class_head=False, image_tower='image', text_inputs=True))
