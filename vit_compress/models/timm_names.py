"""timm's MobileViT state dict -> our parameter names and layouts (numpy only).

Invariant: `to_ours` is a bijection between timm 1.0's `mobilevit_*` state-dict
entries (minus the `num_batches_tracked` counters) and the parameters of
`models.mobilevit.MobileViT`; checkpoint_files.load_timm fits the result to the
model and names whatever does not fit. Layout changes:

- conv weights OIHW -> HWIO (depthwise: (C, 1, k, k) -> (k, k, 1, C));
- Linear weights (out, in) -> Dense kernels (in, out);
- `attn.qkv` (3D, D), rows ordered (q|k|v, head, head_dim) -> `query`, `key`,
  `value` kernels (D, heads, head_dim) and biases (heads, head_dim);
- `attn.proj` (D, D) -> `out` kernel (heads, head_dim, D);
- BatchNorm weight/bias -> scale/bias; running_mean/var keep their names.

The file is read with safetensors' numpy API: no torch at run time.
"""
import re
from typing import Dict

import numpy as np

Flat = Dict[str, np.ndarray]

_MODULES = (  # timm module path (regex) -> ours; applied in order
    (r'^stages\.(\d+)\.(\d+)\.', r'stages_\1_\2/'),
    (r'^head\.fc\.', 'head/'),
    (r'transformer\.(\d+)\.', r'Transformer/encoderblock_\1/'),
    (r'/norm1\.', '/LayerNorm_0.'),
    (r'/norm2\.', '/LayerNorm_1.'),
    (r'/mlp\.fc1\.', '/MlpBlock_0/Dense_0.'),
    (r'/mlp\.fc2\.', '/MlpBlock_0/Dense_1.'),
    (r'/attn\.', '/MultiHeadDotProductAttention_0/'),
    (r'/norm\.', '/Transformer/encoder_norm.'),
    (r'\.(conv|bn)\.', r'/\1/'),
    (r'^(stem|final_conv)\.', r'\1/'),
    (r'\.', '/'),
)
_LEAVES = {'weight': 'kernel', 'bias': 'bias',
           'running_mean': 'running_mean', 'running_var': 'running_var'}


def read_safetensors(path: str) -> Flat:
  """A `.safetensors` state dict as numpy arrays (no torch, no pickle)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return dict(load_file(path))


def _rename(module: str) -> str:
  key = module + '.'  # every rule sees a module name followed by '.'
  for pattern, repl in _MODULES:
    key = re.sub(pattern, repl, key)
  return key.rstrip('/')


def _attention(name: str, leaf: str, value: np.ndarray, num_heads: int) -> Flat:
  scope = name.rsplit('/', 1)[0]
  if name.endswith('/qkv'):
    d = value.shape[-1] if leaf == 'weight' else value.shape[0] // 3
    out = {}
    for i, which in enumerate(('query', 'key', 'value')):
      part = value[i * d:(i + 1) * d]
      out[f'{scope}/{which}/{_LEAVES[leaf]}'] = (
          part.T.reshape(d, num_heads, d // num_heads) if leaf == 'weight'
          else part.reshape(num_heads, d // num_heads))
    return out
  d = value.shape[0]  # proj
  if leaf == 'weight':
    return {f'{scope}/out/kernel': value.T.reshape(num_heads, d // num_heads, d)}
  return {f'{scope}/out/bias': value}


def to_ours(state: Flat, num_heads: int = 4) -> Flat:
  """Renames and re-lays-out a timm MobileViT state dict into our flat paths."""
  out: Flat = {}
  for key, value in state.items():
    value = np.asarray(value)
    module, leaf = key.rsplit('.', 1)
    if leaf == 'num_batches_tracked':  # a step counter, not a weight
      continue
    if leaf not in _LEAVES:
      raise ValueError(f'{key}: unknown timm parameter kind {leaf!r}.')
    name = _rename(module)
    if '/MultiHeadDotProductAttention_0/' in name + '/':
      out.update(_attention(name, leaf, value, num_heads))
      continue
    if name.endswith(('/bn', 'LayerNorm_0', 'LayerNorm_1', 'encoder_norm')):
      out[f'{name}/{"scale" if leaf == "weight" else leaf}'] = value
    elif leaf == 'weight' and value.ndim == 4:
      out[f'{name}/kernel'] = value.transpose(2, 3, 1, 0)
    elif leaf == 'weight':
      out[f'{name}/kernel'] = value.T
    else:
      out[f'{name}/{_LEAVES[leaf]}'] = value
  return out
