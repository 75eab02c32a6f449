"""Vision Transformer (Flax Linen) with vit_jax's Linen parameter names.

Names match vit_jax so that importing its checkpoints is a mapping:
`embedding`, `cls`, `Transformer/posembed_input/pos_embedding`,
`Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0,
LayerNorm_1, MlpBlock_0/{Dense_0, Dense_1}}`, `Transformer/encoder_norm`,
`pre_logits`, `head`.

Beyond vit_jax: each layer may have its own number of heads and MLP width
(pruned models), the head width is a separate field (so removing heads keeps
the others intact), optional DeiT distillation token, token merging (ToMe),
bfloat16 computation, rematerialisation, attention through
`jax.nn.dot_product_attention`, and a scanned encoder (`scan=True`): one
`jax.lax.scan` over the blocks, so XLA compiles one block body instead of
`num_layers` copies. The scanned encoder reads and writes the same unrolled
parameter tree (`layer_stack` stacks at the boundary); it needs identical
layers, so a model with per-layer heads, MLP widths or low-rank ranks (pruned)
or with token merging runs unrolled (`scan_blocker` says why).
"""
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_compress.models import layer_stack
from vit_compress.models import resnet
from vit_compress.models import tome

Dtype = Any
IntOrPerLayer = Union[int, Sequence[int]]


def per_layer(value: IntOrPerLayer, num_layers: int, name: str) -> Tuple[int, ...]:
  """Expands an int to one value per layer; checks a sequence's length."""
  if isinstance(value, int):
    return (value,) * num_layers
  value = tuple(int(v) for v in value)
  if len(value) != num_layers:
    raise ValueError(f'transformer.{name} has {len(value)} entries but '
                     f'transformer.num_layers is {num_layers}; give one per layer.')
  return value


def mlp_ranks(lowrank, num_layers: int) -> Optional[Tuple[Tuple[int, int], ...]]:
  """Per-layer (Dense_0, Dense_1) ranks from `transformer.lowrank`.

  `lowrank` is None (no factorised layer) or {'mlp_rank_0': ..., 'mlp_rank_1':
  ...}, each an int or one int per layer; 0 keeps that kernel full rank.
  """
  if not lowrank:
    return None
  unknown = sorted(set(lowrank) - set(_MLP_RANKS + ATTENTION_RANKS))
  if unknown:
    raise ValueError(f'transformer.lowrank has unknown keys {unknown}; '
                     f'valid: {", ".join(_MLP_RANKS + ATTENTION_RANKS)}.')
  if not any(k in lowrank for k in _MLP_RANKS):
    return None
  ranks = [per_layer(lowrank.get(k, 0), num_layers, f'lowrank.{k}')
           for k in _MLP_RANKS]
  return tuple(zip(*ranks))


_MLP_RANKS = ('mlp_rank_0', 'mlp_rank_1')
# Attention projections, in the order MultiHeadDotProductAttention.ranks takes.
ATTENTION_RANKS = ('query_rank', 'key_rank', 'value_rank', 'out_rank')


def attention_ranks(lowrank, num_layers: int
                    ) -> Optional[Tuple[Tuple[int, int, int, int], ...]]:
  """Per-layer (query, key, value, out) ranks from `transformer.lowrank`
  (0: full kernel); None when no attention projection is factorised."""
  if not lowrank or not any(k in lowrank for k in ATTENTION_RANKS):
    return None
  ranks = [per_layer(lowrank.get(k, 0), num_layers, f'lowrank.{k}')
           for k in ATTENTION_RANKS]
  return tuple(zip(*ranks))


def check_mlp_ranks(ranks, hidden_size: int, mlp_dims: Sequence[int]) -> None:
  """A factor rank above min(in, out) cannot come from the layer's SVD and
  costs more than the full kernel: almost surely a mistake."""
  for layer, (pair, mlp_dim) in enumerate(zip(ranks or (), mlp_dims)):
    for which, rank in enumerate(pair):
      full = min(hidden_size, mlp_dim)
      if rank > full:
        raise ValueError(
            f'transformer.lowrank.mlp_rank_{which}={rank} in layer {layer} is '
            f'larger than the layer it factorises ({hidden_size}x{mlp_dim}, full '
            f'rank {full}): choose a rank of at most {full}, or 0 for full rank.')


def scan_blocker(num_heads, mlp_dim, tome_r=0, mlp_ranks=None,
                 attn_ranks=None) -> Optional[str]:
  """Why the encoder cannot be scanned (None when it can): scan needs identical layers."""
  num_layers = len(num_heads)
  tome_r = per_layer(tome_r, num_layers, 'tome_r')
  for name, values in (('num_heads', num_heads), ('mlp_dim', mlp_dim),
                       ('lowrank', mlp_ranks or ()),
                       ('lowrank (attention)', attn_ranks or ())):
    if len(set(values)) > 1:
      return f'transformer.{name} differs between layers'
  if any(tome_r):
    return 'token merging changes the token count from layer to layer'
  return None


class LowRankDense(nn.Module):
  """Dense with a factorised kernel: x @ kernel_a (in, r) @ kernel_b (r, out) + bias.

  `compress.lowrank.factorize` makes the factors from a trained kernel by a
  truncated SVD; two thin matmuls cost r * (in + out) instead of in * out.
  For attention's DenseGeneral layouts, `features` may be a tuple (query /
  key / value: kernel_b (r, heads, head_dim)) and `in_axes` > 1 (out:
  kernel_a (heads, head_dim, r) contracts the last two input axes).
  """
  features: Union[int, Tuple[int, ...]]
  rank: int
  in_axes: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.lecun_normal()
    features = (self.features,) if isinstance(self.features, int) else tuple(
        self.features)
    n = self.in_axes
    kernel_a = self.param('kernel_a', init, tuple(x.shape[-n:]) + (self.rank,),
                          self.param_dtype)
    kernel_b = self.param('kernel_b', init, (self.rank,) + features,
                          self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, features, self.param_dtype)
    x, kernel_a, kernel_b, bias = nn.dtypes.promote_dtype(
        x, kernel_a, kernel_b, bias, dtype=self.dtype)
    # lax.dot_general as in nn.Dense, so qwix quantizes both factors.
    y = jax.lax.dot_general(
        x, kernel_a, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))),
                      ((), ())))
    y = jax.lax.dot_general(y, kernel_b, (((y.ndim - 1,), (0,)), ((), ())))
    return y + bias


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dense, with dropout; vit_jax's initialisers.

  `ranks[i] > 0` makes `Dense_i` a LowRankDense of that rank (0: full kernel).
  """
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  ranks: Tuple[int, int] = (0, 0)
  activation: str = 'gelu'  # a jax.nn function name (MobileViT: 'silu')

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    out_dim = x.shape[-1]

    def dense(i, n):
      # Explicit names: a mix of Dense and LowRankDense keeps Dense_0, Dense_1.
      if self.ranks[i]:
        return LowRankDense(n, self.ranks[i], dtype=self.dtype,
                            param_dtype=self.param_dtype, name=f'Dense_{i}')
      return nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=nn.initializers.xavier_uniform(),
                      bias_init=nn.initializers.normal(stddev=1e-6),
                      name=f'Dense_{i}')

    x = dense(0, self.mlp_dim)(x)
    x = getattr(jax.nn, self.activation)(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = dense(1, out_dim)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class MultiHeadDotProductAttention(nn.Module):
  """Self-attention with flax's parameter layout: query/key/value (D, H, Dh), out (H, Dh, D).

  Returns the output and the mean key per token, which token merging uses as
  its similarity metric. `size` (tokens merged into each token) adds
  log(size) to the logits: ToMe's proportional attention.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  ranks: Tuple[int, int, int, int] = (0, 0, 0, 0)  # low-rank q, k, v, out (0: full)

  @nn.compact
  def __call__(self, x, *, deterministic: bool, size=None, mask=None):
    features = x.shape[-1]

    def proj(name, rank):
      if rank:
        return LowRankDense((self.num_heads, self.head_dim), rank,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            name=name)
      return nn.DenseGeneral(
          (self.num_heads, self.head_dim), dtype=self.dtype,
          param_dtype=self.param_dtype, name=name,
          kernel_init=nn.initializers.xavier_uniform())
    q, k, v = (proj(n, r)(x) for n, r in zip(('query', 'key', 'value'), self.ranks))
    bias = None
    if size is not None:  # (B, N, 1) token sizes -> (B, 1, 1, N) logit bias
      bias = jnp.log(size)[..., 0][:, None, None, :].astype(q.dtype)
    if self.dropout_rate > 0 and not deterministic:
      y = _attention_with_dropout(q, k, v, bias, mask, self.dropout_rate,
                                  self.make_rng('dropout'))
    else:
      y = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
    if self.ranks[3]:
      out = LowRankDense(features, self.ranks[3], in_axes=2, dtype=self.dtype,
                         param_dtype=self.param_dtype, name='out')(y)
    else:
      out = nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype,
                            param_dtype=self.param_dtype, name='out',
                            kernel_init=nn.initializers.xavier_uniform())(y)
    return out, k.mean(axis=-2)


def _attention_with_dropout(q, k, v, bias, mask, rate, rng):
  """Explicit softmax attention; only used when attention dropout is on."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)
  keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
  weights = jnp.where(keep, weights / (1.0 - rate), 0).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


class Encoder1DBlock(nn.Module):
  """Pre-LN transformer block, with stochastic depth and optional token merging."""
  mlp_dim: int
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  tome_r: int = 0
  num_prefix_tokens: int = 1  # class/distillation tokens that are never merged
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  mlp_ranks: Tuple[int, int] = (0, 0)  # low-rank MLP kernels (0: full rank)
  attn_ranks: Tuple[int, int, int, int] = (0, 0, 0, 0)  # low-rank q, k, v, out
  activation: str = 'gelu'
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x, size, deterministic: bool, mask=None,
               drop_path_rate=None):
    """`drop_path_rate` (a traced scalar, scanned encoder) replaces the field."""
    norm = lambda: nn.LayerNorm(self.norm_epsilon, dtype=self.dtype,
                                param_dtype=self.param_dtype)
    y = norm()(x)
    y, keys = MultiHeadDotProductAttention(
        num_heads=self.num_heads, head_dim=self.head_dim,
        dropout_rate=self.attention_dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype, ranks=self.attn_ranks)(
            y, deterministic=deterministic, size=size, mask=mask)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + self._drop_path(y, deterministic, drop_path_rate)
    if self.tome_r > 0:
      x, size = tome.merge_tokens(x, size, keys, self.tome_r,
                                  self.num_prefix_tokens)
    y = norm()(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype,
                 self.param_dtype, ranks=self.mlp_ranks,
                 activation=self.activation)(
                     y, deterministic=deterministic)
    return x + self._drop_path(y, deterministic, drop_path_rate), size

  def _drop_path(self, y, deterministic, rate=None):
    """Stochastic depth: drops the whole residual branch per example."""
    if rate is None:
      rate = self.drop_path_rate
      if rate == 0:
        return y
    if deterministic:
      return y
    keep = 1.0 - rate
    shape = (y.shape[0],) + (1,) * (y.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, y / keep, 0).astype(y.dtype)


class AddPositionEmbs(nn.Module):
  """Learned position embedding of shape (1, tokens, width)."""

  @nn.compact
  def __call__(self, x):
    pe = self.param('pos_embedding', nn.initializers.normal(stddev=0.02),
                    (1,) + x.shape[1:])
    return x + pe.astype(x.dtype)


class Encoder(nn.Module):
  """Position embedding, the stack of blocks, final LayerNorm ('Transformer')."""
  num_heads: Tuple[int, ...]
  mlp_dim: Tuple[int, ...]
  head_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  tome_r: IntOrPerLayer = 0
  num_prefix_tokens: int = 1
  mlp_ranks: Optional[Tuple[Tuple[int, int], ...]] = None  # per layer
  attn_ranks: Optional[Tuple[Tuple[int, int, int, int], ...]] = None  # per layer
  add_position_embedding: bool = True
  activation: str = 'gelu'    # MLP activation (MobileViT: 'silu')
  norm_epsilon: float = 1e-6  # LayerNorm epsilon (timm/PyTorch: 1e-5)
  remat: bool = False
  scan: bool = False  # only with identical layers (see `scan_blocker`)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    if self.add_position_embedding:
      x = AddPositionEmbs(name='posembed_input')(x)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    num_layers = len(self.num_heads)
    tome_r = per_layer(self.tome_r, num_layers, 'tome_r')
    block_cls = Encoder1DBlock
    if self.remat:  # argnum 0 is the module itself; 3 is `deterministic`
      block_cls = nn.remat(Encoder1DBlock, static_argnums=(3,))
    # Depth-wise linearly increasing drop rate, as in DeiT / big_vision.
    rates = [self.stochastic_depth * i / max(num_layers - 1, 1)
             for i in range(num_layers)]
    # Init runs unrolled, so scanned and unrolled models start from the same
    # parameters; `layer_stack` (see VisionTransformer) stacks them for scan.
    if self.scan and not self.is_initializing():
      x = self._scanned_blocks(block_cls, x, rates, train, mask)
      return nn.LayerNorm(self.norm_epsilon, dtype=self.dtype,
                          param_dtype=self.param_dtype, name='encoder_norm')(x)
    size = jnp.ones(x.shape[:2] + (1,), x.dtype) if any(tome_r) else None
    for i in range(num_layers):
      x, size = block_cls(
          mlp_dim=self.mlp_dim[i], num_heads=self.num_heads[i],
          head_dim=self.head_dim, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          drop_path_rate=rates[i],
          tome_r=tome_r[i], num_prefix_tokens=self.num_prefix_tokens,
          mlp_ranks=self.mlp_ranks[i] if self.mlp_ranks else (0, 0),
          attn_ranks=self.attn_ranks[i] if self.attn_ranks else (0, 0, 0, 0),
          activation=self.activation, norm_epsilon=self.norm_epsilon,
          dtype=self.dtype, param_dtype=self.param_dtype,
          name=f'encoderblock_{i}')(x, size, not train, mask)
    return nn.LayerNorm(self.norm_epsilon, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='encoder_norm')(x)

  def _scanned_blocks(self, block_cls, x, rates, train, mask):
    """One lax.scan over the stacked blocks; dropout keys split per layer."""
    num_layers = len(self.num_heads)
    stochastic = self.stochastic_depth > 0
    body = nn.scan(block_cls, variable_axes={'params': 0},
                   split_rngs={'params': True, 'dropout': True},
                   in_axes=(nn.broadcast, nn.broadcast, nn.broadcast,
                            0 if stochastic else nn.broadcast),
                   length=num_layers)
    x, _ = body(mlp_dim=self.mlp_dim[0], num_heads=self.num_heads[0],
                head_dim=self.head_dim, dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                num_prefix_tokens=self.num_prefix_tokens,
                mlp_ranks=self.mlp_ranks[0] if self.mlp_ranks else (0, 0),
                attn_ranks=self.attn_ranks[0] if self.attn_ranks else (0, 0, 0, 0),
                activation=self.activation, norm_epsilon=self.norm_epsilon,
                dtype=self.dtype, param_dtype=self.param_dtype,
                name=layer_stack.SCANNED)(
                    x, None, not train, mask,
                    jnp.asarray(rates, x.dtype) if stochastic else None)
    return x


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0):
  """big_vision's fixed 2-D position embedding (1, h*w, width): per patch, the
  sines and cosines of its column, then of its row, at width/4 frequencies."""
  if width % 4:
    raise ValueError(f"posemb='sincos2d' needs a width divisible by 4, got {width}.")
  quarter = width // 4
  omega = 1.0 / temperature ** (jnp.arange(quarter) / max(quarter - 1, 1))
  rows, cols = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing='ij')
  x = cols.reshape(-1, 1) * omega[None]
  y = rows.reshape(-1, 1) * omega[None]
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], 1)[None]


class MAPHead(nn.Module):
  """Multi-head attention pooling (big_vision's `pool_type='map'`, SigLIP):
  a learned probe attends over the tokens, then LayerNorm + MLP residual."""
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, _, d = x.shape
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, d),
                       self.param_dtype)
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        dtype=self.dtype, param_dtype=self.param_dtype)(
            jnp.tile(probe.astype(x.dtype), (n, 1, 1)), x)
    y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(x)
    x = x + MlpBlock(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype)(
        y, deterministic=True)
    return x[:, 0]


class VisionTransformer(nn.Module):
  """ViT and R+ViT hybrids; returns logits (or pre-logits when num_classes is None).

  With `distill_token`, training returns `(logits, distill_logits)` and
  evaluation their average (DeiT).
  """
  num_classes: Optional[int]
  patch_size: Tuple[int, int]
  hidden_size: int
  num_heads: Tuple[int, ...]
  mlp_dim: Tuple[int, ...]
  head_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  resnet: Optional[Any] = None  # {'num_layers': tuple, 'width_factor': float}
  classifier: str = 'token'
  representation_size: Optional[int] = None
  distill_token: bool = False
  head_zeroinit: bool = True  # fine-tuning starts from zero logits; LiT must not
  tome_r: IntOrPerLayer = 0
  mlp_ranks: Optional[Tuple[Tuple[int, int], ...]] = None  # low-rank MLP kernels
  attn_ranks: Optional[Tuple[Tuple[int, int, int, int], ...]] = None  # and attention
  remat: bool = False
  posemb: str = 'learn'   # or 'sincos2d' (fixed; big_vision, SigLIP)
  scan: bool = False  # scanned encoder, when `scan_blocker` finds no obstacle
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    x = images.astype(self.dtype)
    if self.resnet is not None:
      x = resnet.hybrid_stem(x, tuple(self.resnet['num_layers']),
                             self.resnet['width_factor'], self.dtype,
                             self.param_dtype)
    x = nn.Conv(self.hidden_size, self.patch_size, strides=self.patch_size,
                padding='VALID', dtype=self.dtype, param_dtype=self.param_dtype,
                name='embedding')(x)
    n, h, w, c = x.shape
    x = jnp.reshape(x, (n, h * w, c))
    if self.posemb == 'sincos2d':   # on the patches only, as big_vision adds it
      x = x + posemb_sincos_2d(h, w, c).astype(x.dtype)
    elif self.posemb != 'learn':
      raise ValueError(f"Unknown posemb {self.posemb!r}; use 'learn' or 'sincos2d'.")

    prefix = []
    if self.classifier == 'token':
      prefix.append(self.param('cls', nn.initializers.zeros, (1, 1, c),
                               self.param_dtype))
    if self.distill_token:
      prefix.append(self.param('dist', nn.initializers.zeros, (1, 1, c),
                               self.param_dtype))
    if prefix:
      x = jnp.concatenate(
          [jnp.tile(p.astype(x.dtype), (n, 1, 1)) for p in prefix] + [x], axis=1)

    scan = self.scan and scan_blocker(self.num_heads, self.mlp_dim, self.tome_r,
                                      self.mlp_ranks, self.attn_ranks) is None
    encoder_cls = Encoder
    if scan:  # the stored tree stays unrolled; the scan sees it stacked
      # init only while initialising: flax's init=True treats any mutable
      # collection (the trainer's batch_stats, intermediates) as an init and
      # would hand the scan the unstacked tree.
      encoder_cls = nn.map_variables(Encoder, 'params', layer_stack.stack,
                                     layer_stack.unstack,
                                     init=self.is_initializing())
    x = encoder_cls(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                head_dim=self.head_dim, dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                stochastic_depth=self.stochastic_depth, tome_r=self.tome_r,
                mlp_ranks=self.mlp_ranks, attn_ranks=self.attn_ranks,
                num_prefix_tokens=len(prefix), remat=self.remat, scan=scan,
                add_position_embedding=self.posemb == 'learn',
                dtype=self.dtype, param_dtype=self.param_dtype,
                name='Transformer')(x, train=train)

    if self.classifier == 'token':
      features = x[:, 0]
    elif self.classifier == 'gap':
      features = jnp.mean(x[:, len(prefix):], axis=1)
    elif self.classifier == 'map':   # the unpruned widths: the head's own
      features = MAPHead(max(self.num_heads), max(self.mlp_dim), self.dtype,
                         self.param_dtype, name='MAPHead_0')(x[:, len(prefix):])
    else:
      raise ValueError(f'Unknown classifier {self.classifier!r}; use token, gap '
                       'or map.')

    if self.representation_size is not None:
      features = nn.Dense(self.representation_size, dtype=self.dtype,
                          param_dtype=self.param_dtype, name='pre_logits')(features)
      features = jnp.tanh(features)
    if self.num_classes is None:
      return features.astype(jnp.float32)

    head = lambda name: nn.Dense(self.num_classes, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=name,
                                 kernel_init=nn.initializers.zeros
                                 if self.head_zeroinit else
                                 nn.initializers.lecun_normal())
    logits = head('head')(features).astype(jnp.float32)
    if not self.distill_token:
      return logits
    dist_logits = head('head_dist')(x[:, len(prefix) - 1]).astype(jnp.float32)
    if train:
      return logits, dist_logits
    return (logits + dist_logits) / 2
