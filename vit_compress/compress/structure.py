"""Structural groups of a transformer, derived from its parameters, and shrink.

A *group* is a set of parameter slices that only make sense together: one
attention head is `query/key/value` kernel[:, h, :] and bias[h, :] plus `out`
kernel[h, :, :]; one MLP neuron is `Dense_0` kernel[:, j], bias[j] and
`Dense_1` kernel[j, :]; one layer is everything under `encoderblock_i`. Groups
are read off the parameter tree (any `.../encoderblock_{i}` with vit_jax's
Linen names: ViT, R+ViT hybrids, LiT's towers, and the transformers inside
MobileViT blocks, `stages_{s}_{i}/Transformer/encoderblock_{j}`), never
listed per checkpoint.

`shrink` turns a structurally masked ViT or MobileViT into a smaller dense
one: kept heads and neurons are gathered, fully masked blocks are dropped and
the rest renumbered within their encoder, and the model config records the
per-layer head counts and MLP widths, so the result rebuilds from its config
alone.
"""
import dataclasses
import re
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_compress import param_paths
from vit_compress.models import families as model_families  # not GroupFamily

_BLOCK = re.compile(r'^(?P<encoder>(?:.*/)?)encoderblock_(?P<index>\d+)/')
_ATTENTION = 'MultiHeadDotProductAttention_0'
_MLP = 'MlpBlock_0'


def flatten(tree) -> Tuple[Dict[str, Any], Any]:
  """{path: leaf} in tree order, and the treedef that `unflatten` rebuilds with."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return {param_paths.path_str(p): leaf for p, leaf in leaves}, treedef


def unflatten(treedef, flat: Dict[str, Any]):
  return jax.tree_util.tree_unflatten(treedef, list(flat.values()))


@dataclasses.dataclass(frozen=True)
class GroupFamily:
  """The groups of one kind in one block: `size` heads, neurons, or 1 layer.

  Each member is (parameter path, axis): slice `i` of that axis belongs to
  group `i`. Axis None means the whole parameter (layer groups).
  """
  kind: str      # 'head' | 'neuron' | 'layer'
  encoder: str   # 'Transformer' or, in LiT, 'img/Transformer'
  layer: int
  size: int
  members: Tuple[Tuple[str, Optional[int]], ...]

  @property
  def block(self) -> str:
    prefix = f'{self.encoder}/' if self.encoder else ''
    return f'{prefix}encoderblock_{self.layer}'


def find_groups(params, model_config: Optional[ml_collections.ConfigDict] = None
                ) -> List[GroupFamily]:
  """Head, neuron and layer groups of every encoder block in `params`.

  Works on arrays or ShapeDtypeStructs. With a ViT `model_config`, checks that
  the tree agrees with it (layers, heads per layer, MLP width).
  """
  flat, _ = flatten(params)
  blocks: Dict[Tuple[str, int], List[str]] = {}
  for path in flat:
    match = _BLOCK.match(path)
    if match:
      encoder = match.group('encoder').rstrip('/')
      blocks.setdefault((encoder, int(match.group('index'))), []).append(path)

  families = []
  for (encoder, layer), paths in sorted(blocks.items()):
    prefix = f'{encoder}/' if encoder else ''
    block = f'{prefix}encoderblock_{layer}'
    att, mlp = f'{block}/{_ATTENTION}', f'{block}/{_MLP}'
    # Low-rank projections: heads on kernel_b (r, heads, head_dim) of
    # query/key/value and on kernel_a (heads, head_dim, r) of out.
    heads = [(f'{att}/{n}/{k}', 1) for k in ('kernel', 'kernel_b')
             for n in ('query', 'key', 'value')]
    heads += [(f'{att}/{n}/bias', 0) for n in ('query', 'key', 'value')]
    heads += [(f'{att}/out/kernel', 0), (f'{att}/out/kernel_a', 0)]
    # A low-rank Dense_i (kernel_a (in, r) @ kernel_b (r, out)) has its
    # neurons on kernel_b of Dense_0 and kernel_a of Dense_1.
    neurons = [(f'{mlp}/Dense_0/kernel', 1), (f'{mlp}/Dense_0/kernel_b', 1),
               (f'{mlp}/Dense_0/bias', 0), (f'{mlp}/Dense_1/kernel', 0),
               (f'{mlp}/Dense_1/kernel_a', 0)]
    for kind, members in (('head', heads), ('neuron', neurons)):
      members = [(p, a) for p, a in members if p in flat]  # biases are optional
      if not members or not members[0][0].endswith(('/kernel', '/kernel_b')):
        raise ValueError(f'{block} has no {members[0][0] if members else kind} '
                         f'kernel; cannot derive {kind} groups from a block '
                         'without vit_jax Linen parameter names.')
      kernel = members[0][0]
      size = flat[kernel].shape[1]
      for p, a in members:
        if flat[p].shape[a] != size:
          raise ValueError(f'{p} has {flat[p].shape[a]} entries on axis {a} but '
                           f'{kernel} has {size} {kind}s.')
      families.append(GroupFamily(kind, encoder, layer, size, tuple(members)))
    families.append(GroupFamily('layer', encoder, layer, 1,
                                tuple((p, None) for p in paths)))
  if model_config is not None:
    _check_config(families, model_config)
  return families


def encoders(config) -> List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]:
  """The transformer encoders a model config builds, in order: (parameter
  prefix, heads per layer, MLP width per layer). A ViT has one, 'Transformer';
  MobileViT one per MobileViT block, 'stages_{s}_{i}/Transformer'."""
  return model_families.lookup(config).encoders(config)


def _check_config(families: List[GroupFamily], config) -> None:
  """The parameters must be the ones this ViT or MobileViT config builds."""
  vit = not model_families.lookup(config).layer_widths   # the config's wording
  for encoder, heads, mlp in encoders(config):
    mine = [f for f in families if f.encoder == encoder]
    found = sorted({f.layer for f in mine})
    if found != list(range(len(heads))):
      said = (f'transformer.num_layers={len(heads)}' if vit else
              f'{len(heads)} layers (transformer_depths, layer_heads)')
      raise ValueError(f'The parameters have {encoder} blocks {found} but the '
                       f'model config says {said}.')
    expected = {'head': heads, 'neuron': mlp}
    for f in mine:
      if f.kind in expected and f.size != expected[f.kind][f.layer]:
        name = 'num_heads' if f.kind == 'head' else 'mlp_dim'
        said = (f'transformer.{name}={getattr(config.transformer, name)}' if vit
                else f'{expected[f.kind][f.layer]}')
        raise ValueError(f'{f.block} has {f.size} {f.kind}s but the model config '
                         f'says {said}.')


def input_axes(path: str, ndim: int) -> int:
  """How many leading axes a kernel contracts with its input (N:M groups run there).

  Attention query/key/value kernels are (D, heads, head_dim): only axis 0.
  Dense (in, out), `out` (heads, head_dim, D) and conv (h, w, in, out)
  kernels contract all axes but the last. A vector is its own input axis.
  """
  if re.search(r'(^|/)(query|key|value)/kernel$', path):
    return 1
  return max(ndim - 1, 1)


def group_scores(family: GroupFamily, flat: Dict[str, jax.Array]) -> jax.Array:
  """Sums `flat` (element scores, or masks) over each group: shape (size,).

  Scalar leaves (masks of unpruned parameters) count as all ones.
  """
  total = jnp.zeros((family.size,), jnp.float32)
  for path, axis in family.members:
    x = jnp.asarray(flat[path], jnp.float32)
    if axis is None:
      total += jnp.sum(x)
      continue
    if x.ndim == 0:
      total += x
      continue
    total += jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != axis))
  return total


def expand(family: GroupFamily, keep: jax.Array, path: str, axis: Optional[int],
           shape: Tuple[int, ...]) -> jax.Array:
  """The per-group `keep` vector broadcast onto one member's shape."""
  if axis is None:
    return jnp.broadcast_to(keep[0], shape)
  view = [1] * len(shape)
  view[axis] = family.size
  return jnp.broadcast_to(jnp.reshape(keep, view), shape)


# ---------------------------------------------------------------- shrink
def masks_from_zeros(params):
  """The pruning masks a saved model's zeros imply: 1.0 where a weight is
  non-zero, float32 (`shrink` casts them to each parameter's dtype). A masked
  model's pruned heads, neurons and layers are exactly zero, so this recovers
  its masks from the weights alone."""
  return jax.tree.map(lambda p: (np.asarray(p) != 0).astype(np.float32), params)


def shrink_zeros(params, model_config: ml_collections.ConfigDict
                 ) -> Tuple[Dict[str, Any], ml_collections.ConfigDict]:
  """`shrink` with the masks the zeros imply: a masked model made dense."""
  return shrink(params, masks_from_zeros(params), model_config)


def _removed(family: GroupFamily, masks: Dict[str, np.ndarray]) -> np.ndarray:
  """Host-side: True for groups whose every slice is masked to zero."""
  removed = np.ones((family.size,), bool)
  for path, axis in family.members:
    m = masks[path]
    if m.ndim == 0:  # an unpruned parameter: nothing of it is removed
      return np.zeros((family.size,), bool)
    if axis is None:
      removed &= not np.any(m)
    else:
      removed &= ~np.any(m != 0, axis=tuple(a for a in range(m.ndim) if a != axis))
  return removed


def plan(params, masks, model_config=None) -> Dict[str, Dict[str, Any]]:
  """Per block: kept head / neuron indices and whether the block is removed.

  A head, neuron or block counts as removed only when all of its slices are
  masked. A block that keeps no head (or no neuron) but is not removed keeps
  one all-zero head (neuron): it contributes nothing, so the logits are
  unchanged, and the model needs no zero-width special case.
  """
  flat_m = {k: np.asarray(v) for k, v in flatten(masks)[0].items()}
  out = {}
  for f in find_groups(params, model_config):
    entry = out.setdefault(f.block, {'encoder': f.encoder, 'layer': f.layer})
    removed = _removed(f, flat_m)
    if f.kind == 'layer':
      entry['removed'] = bool(removed[0])
      continue
    kept = np.flatnonzero(~removed)
    entry[f'{f.kind}s_total'] = f.size
    entry[f'{f.kind}s'] = kept if kept.size else np.zeros((1,), np.int64)
  return out


def summary(params, masks) -> Dict[str, Dict[str, Any]]:
  """Kept heads / neurons per block, for logs and reports (plain numbers)."""
  return {block: {'removed': e['removed'],
                  'heads': 0 if e['removed'] else len(e['heads']),
                  'heads_total': e['heads_total'],
                  'neurons': 0 if e['removed'] else len(e['neurons']),
                  'neurons_total': e['neurons_total']}
          for block, e in plan(params, masks).items()}


def widths(model_config) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
  """Heads and MLP widths per transformer layer, all encoders in order (for logs)."""
  enc = encoders(model_config)
  return (tuple(h for _, heads, _ in enc for h in heads),
          tuple(m for _, _, mlp in enc for m in mlp))


def shrink(params, masks, model_config: ml_collections.ConfigDict
           ) -> Tuple[Dict[str, Any], ml_collections.ConfigDict]:
  """A smaller dense ViT or MobileViT whose logits equal the masked model's.

  Host-side (shapes change). Returns `(new_params, new_model_config)`, a fresh
  ConfigDict recording the kept widths so the result rebuilds from it alone:
  for a ViT, per-layer `transformer.num_heads` and `transformer.mlp_dim`
  tuples, `head_dim` fixed to the original width and `num_layers` after
  removing fully masked blocks; for MobileViT, `layer_heads` and
  `layer_mlp_dims` (one entry per transformer layer, stages in order) and
  `transformer_depths`. Masked entries that survive (e.g. unstructured
  sparsity inside a kept head) stay zero.
  """
  family = model_config.get('family')
  if not model_families.can_shrink(model_config):
    raise ValueError(f'shrink supports ViT, R+ViT and MobileViT models (family '
                     f'"vit" or "mobilevit"), not family {family!r}.')
  blocks = plan(params, masks, model_config)
  flat_p = dict(param_paths.flatten_with_paths(params))
  flat_m = flatten(masks)[0]
  masked = {k: np.asarray(v) * np.asarray(flat_m[k]).astype(np.asarray(v).dtype)
            for k, v in flat_p.items()}
  kept = {}    # encoder -> its kept blocks, in layer order
  rename = {}  # kept block -> its new name (renumbered within its encoder)
  for encoder, _, _ in encoders(model_config):
    kept[encoder] = [b for b, e in sorted(blocks.items(), key=lambda x: x[1]['layer'])
                     if e['encoder'] == encoder and not e['removed']]
    rename.update({b: f'{encoder}/encoderblock_{j}'
                   for j, b in enumerate(kept[encoder])})
  gathers = {}  # parameter path -> (axis, kept indices)
  for f in find_groups(params, model_config):
    if f.block in rename and f.kind in ('head', 'neuron'):
      for path, axis in f.members:
        gathers[path] = (axis, blocks[f.block][f'{f.kind}s'])

  new_flat = {}
  for path, value in masked.items():
    match = _BLOCK.match(path)
    if match and match.group('encoder').rstrip('/') in kept:
      block = path[:match.end() - 1]
      if block not in rename:
        continue  # a removed block: the identity, dropped
      if path in gathers:
        axis, index = gathers[path]
        value = np.take(value, index, axis=axis)
      path = rename[block] + path[match.end() - 1:]
    new_flat[path] = jnp.asarray(value)
  new_params = param_paths.tree_from_flat(new_flat)

  heads = {e: tuple(len(blocks[b]['heads']) for b in bs) for e, bs in kept.items()}
  mlp = {e: tuple(len(blocks[b]['neurons']) for b in bs) for e, bs in kept.items()}
  d = model_config.to_dict()  # a new ConfigDict: the old one's fields are type-locked
  if model_families.lookup(model_config).layer_widths:
    d['transformer_depths'] = tuple(
        len(kept.get(f'stages_{s}_{model_config.depths[s]}/Transformer', ()))
        for s in range(len(model_config.widths)))
    d['layer_heads'] = tuple(h for e in kept for h in heads[e])
    d['layer_mlp_dims'] = tuple(m for e in kept for m in mlp[e])
    return new_params, ml_collections.ConfigDict(d)
  t = model_config.transformer
  td = d['transformer']
  td['head_dim'] = int(t.head_dim) if t.get('head_dim') else (
      model_config.hidden_size // encoders(model_config)[0][1][0])
  td['num_layers'] = len(kept['Transformer'])
  td['num_heads'] = heads['Transformer']
  td['mlp_dim'] = mlp['Transformer']
  tome_r = d.get('tome_r', 0)
  if not isinstance(tome_r, int):
    kept_index = [blocks[b]['layer'] for b in kept['Transformer']]
    d['tome_r'] = tuple(tome_r[i] for i in kept_index)
  return new_params, ml_collections.ConfigDict(d)
