"""Text towers for LiT: a small pre-LN text transformer and a BERT encoder.

TextTransformer follows vit_jax / big_vision (`Embed_0`, `pos_embedding`,
`Encoder_0`, `head`; pooled at the *last* token). Bert is a post-LN BERT
encoder (token, position and segment embeddings), pooled at the first ([CLS])
token, without BERT's pooler; padding tokens (id 0) are masked out. It
computes what flaxformer's `BertEncoder` computes (tanh GELU, LayerNorm
epsilon 1e-12), the text tower of vit_jax's BERT LiT files, whose parameters
`flaxformer_names` renames to these.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vit_compress.models import vit

Dtype = Any


class TextTransformer(nn.Module):
  num_classes: Optional[int]
  width: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  vocab_size: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    x = nn.Embed(self.vocab_size, self.width, param_dtype=self.param_dtype)(tokens)
    _, length, width = x.shape
    x = x + self.param('pos_embedding',
                       nn.initializers.normal(stddev=1 / np.sqrt(width)),
                       (1, length, width), self.param_dtype)
    x = vit.Encoder(num_heads=(self.num_heads,) * self.num_layers,
                    mlp_dim=(self.mlp_dim,) * self.num_layers,
                    head_dim=self.width // self.num_heads,
                    dropout_rate=self.dropout_rate, add_position_embedding=False,
                    dtype=self.dtype, param_dtype=self.param_dtype)(
                        x.astype(self.dtype), train=train)
    x = x[:, -1]
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype,
                   param_dtype=self.param_dtype, name='head')(x)
    return x.astype(jnp.float32)


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y, _ = vit.MultiHeadDotProductAttention(
        self.num_heads, x.shape[-1] // self.num_heads, name='attention', **kw)(
            x, deterministic=deterministic, mask=mask)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = nn.LayerNorm(epsilon=1e-12, name='attention_layer_norm', **kw)(x + y)
    y = nn.Dense(self.mlp_dim, name='intermediate', **kw)(x)
    y = nn.Dense(x.shape[-1], name='output', **kw)(nn.gelu(y))  # tanh GELU, as flaxformer
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return nn.LayerNorm(epsilon=1e-12, name='output_layer_norm', **kw)(x + y)


class Bert(nn.Module):
  num_classes: Optional[int]
  width: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  vocab_size: int
  max_position: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    kw = dict(param_dtype=self.param_dtype)
    length = tokens.shape[1]
    x = nn.Embed(self.vocab_size, self.width, name='token_embedder', **kw)(tokens)
    x = x + nn.Embed(self.max_position, self.width, name='position_embedder',
                     **kw)(jnp.arange(length)[None])
    x = x + nn.Embed(self.type_vocab_size, self.width, name='type_embedder',
                     **kw)(jnp.zeros_like(tokens))
    x = nn.LayerNorm(epsilon=1e-12, name='embeddings_layer_norm',
                     dtype=self.dtype, **kw)(x.astype(self.dtype))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    mask = (tokens > 0)[:, None, None, :]  # (B, 1, 1, K): attend to non-padding
    for i in range(self.num_layers):
      x = BertLayer(self.num_heads, self.mlp_dim, self.dropout_rate, self.dtype,
                    self.param_dtype, name=f'layer_{i}')(
                        x, mask, deterministic=not train)
    x = x[:, 0]
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype,
                   param_dtype=self.param_dtype, name='head')(x)
    return x.astype(jnp.float32)
