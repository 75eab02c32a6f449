"""Pruning configs and pruned-looking parameters shared by the pruning tests."""
from vit_compress.compress import pruning


def prune_config(**overrides):
  """`config.prune` with its defaults and `overrides`."""
  config = pruning.default_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def zero_head(params, block: int, head: int):
  """Head `head` of encoder block `block` set to zeros, in place, as structured
  pruning saves it (query/key/value columns and bias, out rows)."""
  attn = params['Transformer'][f'encoderblock_{block}']['MultiHeadDotProductAttention_0']
  for name in ('query', 'key', 'value'):
    attn[name]['kernel'][:, head] = 0
    attn[name]['bias'][head] = 0
  attn['out']['kernel'][head] = 0
  return params
