"""flaxformer's `BertEncoder` parameters -> our `text.Bert` names and layouts.

vit_jax's LiT files with a BERT text tower (LiT-B16B, LiT-B16B_2, LiT-L16L,
loaded by `lit.ipynb` from gs://vit_models/lit) hold flaxformer's
`bert.BertEncoder`, which vit_jax's `BertModel` creates unnamed (hence
`txt/BertEncoder_0/`) and follows with `txt/head`. Its layout, from
flaxformer's public source (`architectures/bert/bert.py`, `components/dense.py`):

  embedder/embedders_{token,position,segment}_ids/embedding   (N, D)
  layer_norm/{scale,bias}                                     embeddings' LayerNorm
  encoder_block/layer_sequence/layers_{i}/
    attention_block/attention_layer/{query,key,value}/kernel  (D, H*d)
    attention_block/dense_layer/kernel                        (H*d, D)
    attention_block/layer_norm                                post-LN after attention
    mlp_block/mlp/dense_layer                                 (D, mlp), GELU (tanh)
    mlp_block/dense_layer                                     (mlp, D)
    mlp_block/layer_norm                                      post-LN after the MLP

There is no pooler: LiT pools the [CLS] position and applies `head`.
flaxformer's DenseGeneral stores multi-axis kernels flattened to 2-D (and
biases to 1-D) and reshapes them row-major when called, so reshaping them
row-major to our (D, H, d) / (H, d, D) / (H, d) shapes is exact.

Invariant: `to_ours` maps every `BertEncoder_0/` key onto exactly one `Bert`
parameter and leaves every other key as it was; checkpoint's fitting then
names whatever does not fit.
"""
import math
import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np

Flat = Dict[str, np.ndarray]

ENCODER = 'BertEncoder_0/'
_LAYER = r'encoder_block/layer_sequence/layers_(\d+)/'
_NAMES = (   # flaxformer path (after BertEncoder_0/) -> ours; the first match wins
    (r'embedder/embedders_token_ids/', 'token_embedder/'),
    (r'embedder/embedders_position_ids/', 'position_embedder/'),
    (r'embedder/embedders_segment_ids/', 'type_embedder/'),
    (r'layer_norm/', 'embeddings_layer_norm/'),
    (_LAYER + r'attention_block/attention_layer/(query|key|value)/',
     r'layer_\1/attention/\2/'),
    (_LAYER + r'attention_block/dense_layer/', r'layer_\1/attention/out/'),
    (_LAYER + r'attention_block/layer_norm/', r'layer_\1/attention_layer_norm/'),
    (_LAYER + r'mlp_block/mlp/dense_layer/', r'layer_\1/intermediate/'),
    (_LAYER + r'mlp_block/dense_layer/', r'layer_\1/output/'),
    (_LAYER + r'mlp_block/layer_norm/', r'layer_\1/output_layer_norm/'),
)


def _rename(rest: str) -> str:
  for pattern, ours in _NAMES:
    m = re.match(pattern, rest)
    if m:
      return m.expand(ours) + rest[m.end():]
  return ENCODER + rest   # unknown: kept, so the fit reports it by its own name


def to_ours(flat: Flat, target: Mapping[str, Any]) -> Tuple[Flat, bool]:
  """(flat with every `.../BertEncoder_0/...` key renamed, whether any was).

  A renamed array whose size equals its target's but whose shape differs
  (the flattened attention kernels and biases) is reshaped to the target's.
  """
  out, found = {}, False
  for key, value in flat.items():
    scope, sep, rest = key.partition(ENCODER)
    if not sep or (scope and not scope.endswith('/')):
      out[key] = value
      continue
    found = True
    ours = scope + _rename(rest)
    want = target.get(ours)
    if (want is not None and tuple(want.shape) != value.shape
        and math.prod(want.shape) == value.size):
      value = np.reshape(value, tuple(want.shape))
    out[ours] = value
  return out, found
