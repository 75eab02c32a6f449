"""MobileViT (Mehta & Rastegari, 2022) in Flax Linen, with timm 1.0's layout.

A designed-light model: MobileNetV2 inverted residuals for the early, large
feature maps, then MobileViT blocks, which mix locally with convolutions and
globally with a small transformer over patches. Invariant: the architecture and
the parameter count equal timm's `mobilevit_xxs/xs/s` (which follow Apple's
ml-cvnets), so `import_timm` maps its state dict one-to-one.

    stem       3x3 conv, stride 2, BN, SiLU                  (3 -> stem_width)
    stages_s   depths[s] inverted residuals (the first strided), then, when
               transformer_dims[s] > 0, one MobileViT block
    final_conv 1x1 conv, BN, SiLU                            (-> num_features)
    head       global average pool, Dense                    (-> num_classes)

Inverted residual (`conv1_1x1`, `conv2_kxk`, `conv3_1x1`): 1x1 expand to
mid = make_divisible(in * expansion), 3x3 depthwise (stride), 1x1 project with
BN and no activation; identity shortcut only when shape is kept (no projection).

MobileViT block (`conv_kxk`, `conv_1x1`, `Transformer`, `conv_proj`,
`conv_fusion`): 3x3 conv+BN+SiLU (local), 1x1 conv without bias or BN to the
transformer width d; unfold into patch_size x patch_size patches: for each of
the P pixel positions of a patch, one sequence over the N patches; pre-LN
transformer blocks (4 heads, MLP 2d with SiLU, LayerNorm eps 1e-5; `vit.Encoder`
without position embedding, its `encoder_norm` is timm's `norm`); fold back;
1x1 conv+BN+SiLU to the block's width c; concatenate with the block input; 3x3
conv+BN+SiLU from 2c to c (fusion). A feature map not divisible by the patch is
resized bilinearly (half-pixel, as PyTorch's align_corners=False) and back.

Parameter count (BN has scale and bias: 2 per channel; its running statistics
are buffers, not counted, as in PyTorch). A k x k conv from a to b channels
has k*k*a*b weights, a depthwise one k*k*a. Inverted residual a -> b with mid
m: a*m + 2m (1x1, BN) + 9m + 2m (depthwise, BN) + m*b + 2b (1x1, BN).
Transformer layer of width d (MLP 2d): LayerNorms 2 * 2d, q/k/v/out
4 * (d*d + d), MLP d*2d + 2d + 2d*d + d; in all 8d^2 + 11d. MobileViT block of
width c, transformer width d, L layers: 9c^2 + 2c (conv_kxk) + c*d (conv_1x1)
+ L(8d^2 + 11d) + 2d (encoder_norm) + d*c + 2c (conv_proj) + 9*2c*c + 2c
(conv_fusion).

XXS (stem 16; stages c = 16, 24, 48, 64, 80; depths 1, 3, 1, 1, 1; expansion 2;
d = 64, 80, 96 with L = 2, 4, 3; features 320):
  stem               3*3*3*16 + 32                               =       464
  stage 0  IR 16->16 (m 32)   512+64 + 288+64 + 512+32             =     1,472
  stage 1  IR 16->24 (m 32)   512+64 + 288+64 + 768+48             =     1,744
           2 x IR 24->24 (m 48)  2 * (1152+96 + 432+96 + 1152+48)   =     5,952
  stage 2  IR 24->48 (m 48)   1152+96 + 432+96 + 2304+96           =     4,176
           MobileViT c 48, d 64, L 2:
             20,736+96 + 3,072 + 2*(32,768+704) + 128 + 3,072+96
             + 41,472+96                                           =   135,712
  stage 3  IR 48->64 (m 96)   4608+192 + 864+192 + 6144+128        =    12,128
           MobileViT c 64, d 80, L 4:
             36,864+128 + 5,120 + 4*(51,200+880) + 160 + 5,120+128
             + 73,728+128                                          =   329,696
  stage 4  IR 64->80 (m 128)  8192+256 + 1152+256 + 10,240+160     =    20,256
           MobileViT c 80, d 96, L 3:
             57,600+160 + 7,680 + 3*(73,728+1,056) + 192 + 7,680+160
             + 115,200+160                                         =   413,184
  final_conv 80*320 + 640                                          =    26,240
  head       320*1000 + 1000                                       =   321,000
  total                                                            = 1,272,024
XS and S follow the same formulas with their widths (tests/test_zoo.py checks
all three against timm: 2,317,848 and 5,578,632).

A shrunk model (`compress.structure.shrink`) has fewer heads, MLP neurons or
layers in its transformers: `layer_heads` / `layer_mlp_dims` then give one
width per transformer layer, all stages in order, and the head width stays
transformer_dim // num_heads.
"""
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vit_compress.models import vit
from vit_compress.models.batch_norm import BatchNorm

Dtype = Any


def make_divisible(v: float, divisor: int = 8) -> int:
  """Channels rounded to a multiple of `divisor`, never more than 10 % down
  (MobileNet's rule, as timm applies it to the expanded width)."""
  new = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * v else new


def transformer_widths(transformer_dims: Sequence[int],
                       transformer_depths: Sequence[int], num_heads: int,
                       mlp_ratio: float, layer_heads: Optional[Sequence[int]] = None,
                       layer_mlp_dims: Optional[Sequence[int]] = None):
  """Per stage, (heads per layer, MLP width per layer); () for a stage without
  a transformer. Without `layer_*` every layer has `num_heads` heads and an
  MLP of mlp_ratio * transformer_dim (timm's)."""
  total = sum(d for d, t in zip(transformer_depths, transformer_dims) if t)
  for name, given in (('layer_heads', layer_heads), ('layer_mlp_dims', layer_mlp_dims)):
    if given is not None and len(given) != total:
      raise ValueError(f'{name} has {len(given)} entries but the transformers '
                       f'have {total} layers (transformer_depths); give one per layer.')
  out, start = [], 0
  for dim, depth in zip(transformer_dims, transformer_depths):
    depth = depth if dim else 0
    span = slice(start, start + depth)
    heads = (tuple(int(h) for h in layer_heads[span]) if layer_heads is not None
             else (num_heads,) * depth)
    mlp = (tuple(int(m) for m in layer_mlp_dims[span]) if layer_mlp_dims is not None
           else (int(dim * mlp_ratio),) * depth)
    out.append((heads, mlp))
    start += depth
  return tuple(out)


class ConvBN(nn.Module):
  """k x k convolution (no bias, PyTorch's symmetric padding k // 2), BN, activation."""
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  act: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    p = self.kernel // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), self.stride,
                padding=((p, p), (p, p)), feature_group_count=self.groups,
                use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                name='conv')(x)
    x = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(
        x, train=train)
    return nn.silu(x) if self.act else x


class InvertedResidual(nn.Module):
  """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""
  features: int
  stride: int = 1
  expansion: float = 2.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    mid = make_divisible(x.shape[-1] * self.expansion)
    y = ConvBN(mid, 1, name='conv1_1x1', **kw)(x, train=train)
    y = ConvBN(mid, 3, self.stride, groups=mid, name='conv2_kxk', **kw)(
        y, train=train)
    y = ConvBN(self.features, 1, act=False, name='conv3_1x1', **kw)(y, train=train)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of PyTorch's bilinear resize, align_corners=False."""
  src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
  lo = np.minimum(np.floor(src).astype(int), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), lo), 1 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m


def resize(x, h: int, w: int):
  """Bilinear resize as two 2-D matmuls with constant weights: what
  F.interpolate computes, in ops TFLite converts (jax.image.resize does not)."""
  b, n_h, n_w, c = x.shape
  x = jnp.moveaxis(x, 1, 0).reshape(n_h, -1)
  x = (jnp.asarray(_bilinear_matrix(n_h, h), x.dtype) @ x).reshape(h, b, n_w, c)
  x = jnp.moveaxis(x, 2, 0).reshape(n_w, -1)
  x = (jnp.asarray(_bilinear_matrix(n_w, w), x.dtype) @ x).reshape(w, h, b, c)
  return x.transpose(2, 1, 0, 3)


class MobileViTBlock(nn.Module):
  """Local conv, unfold into patches, transformer over patches, fold, fuse."""
  features: int
  transformer_dim: int
  heads: Tuple[int, ...]     # per transformer layer
  mlp_dims: Tuple[int, ...]  # per transformer layer
  head_dim: int
  patch_size: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    shortcut = x
    c = x.shape[-1]
    y = ConvBN(c, 3, name='conv_kxk', **kw)(x, train=train)
    y = nn.Conv(self.transformer_dim, (1, 1), use_bias=False, name='conv_1x1',
                **kw)(y)

    b, h, w, d = y.shape
    p = self.patch_size
    nh, nw = math.ceil(h / p), math.ceil(w / p)
    resized = (nh * p, nw * p) != (h, w)
    if resized:
      y = resize(y, nh * p, nw * p)
    # (B, nh, p, nw, p, d) -> (B, p, p, nh, nw, d): one sequence per pixel
    # position inside the patch, over the nh * nw patches.
    y = y.reshape(b, nh, p, nw, p, d).transpose(0, 2, 4, 1, 3, 5)
    y = y.reshape(b * p * p, nh * nw, d)
    y = vit.Encoder(
        num_heads=tuple(self.heads), mlp_dim=tuple(self.mlp_dims),
        head_dim=self.head_dim, num_prefix_tokens=0,
        add_position_embedding=False, activation='silu', norm_epsilon=1e-5,
        name='Transformer', **kw)(y, train=train)
    y = y.reshape(b, p, p, nh, nw, d).transpose(0, 3, 1, 4, 2, 5)
    y = y.reshape(b, nh * p, nw * p, d)
    if resized:
      y = resize(y, h, w)

    y = ConvBN(self.features, 1, name='conv_proj', **kw)(y, train=train)
    y = jnp.concatenate([shortcut, y], axis=-1)
    return ConvBN(self.features, 3, name='conv_fusion', **kw)(y, train=train)


class MobileViT(nn.Module):
  """Stem, stages of inverted residuals (+ a MobileViT block), 1x1 conv, head."""
  num_classes: Optional[int]
  stem_width: int
  widths: Sequence[int]
  depths: Sequence[int]
  strides: Sequence[int]
  expansion: Sequence[float]
  transformer_dims: Sequence[int]
  transformer_depths: Sequence[int]
  num_features: int
  patch_size: int = 2
  num_heads: int = 4
  mlp_ratio: float = 2.0
  layer_heads: Optional[Tuple[int, ...]] = None     # a shrunk model's
  layer_mlp_dims: Optional[Tuple[int, ...]] = None  # a shrunk model's
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    widths = transformer_widths(self.transformer_dims, self.transformer_depths,
                                self.num_heads, self.mlp_ratio,
                                self.layer_heads, self.layer_mlp_dims)
    x = ConvBN(self.stem_width, 3, 2, name='stem', **kw)(
        images.astype(self.dtype), train=train)
    for s, width in enumerate(self.widths):
      for i in range(self.depths[s]):
        x = InvertedResidual(width, self.strides[s] if i == 0 else 1,
                             self.expansion[s], name=f'stages_{s}_{i}', **kw)(
                                 x, train=train)
      if self.transformer_dims[s]:
        x = MobileViTBlock(width, self.transformer_dims[s], *widths[s],
                           self.transformer_dims[s] // self.num_heads,
                           self.patch_size, name=f'stages_{s}_{self.depths[s]}',
                           **kw)(
                               x, train=train)
    x = ConvBN(self.num_features, 1, name='final_conv', **kw)(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is None:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_classes, name='head', **kw)(x).astype(jnp.float32)
