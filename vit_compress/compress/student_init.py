"""A smaller student started from the teacher's weights, not from random ones.

    params, model_config = student_init.init_student(teacher_params,
                                                     teacher_config, spec)

`spec` (`config.student_init`) picks what the student keeps of a ViT teacher:

  layers     which encoder blocks: None (all), indices such as (1, 3), or a
             rule: 'even' (0, 2, ...) or 'odd' (1, 3, ...), as DistilBERT
             takes every other layer;
  num_heads  attention heads kept per kept layer (an int, or one per kept
             layer); None keeps all;
  mlp_dim    MLP neurons kept per kept layer (the same forms);
  criterion  how heads and neurons are ranked: the pruning module's criteria
             ('magnitude': sum of squared weights of the group; 'taylor':
             |w * dL/dw| summed, from `taylor_scores`; 'random').

Invariant: the result is exactly what `structure.shrink` makes of the teacher
with the dropped blocks, heads and neurons masked, so the groups are the ones
pruning and shrink use (nothing is re-derived here), everything else (patch
embedding, position embeddings, norms, head) is copied, and with nothing
dropped the student's logits equal the teacher's. The result is a dense model
config with per-layer `num_heads` / `mlp_dim`, ready for distillation.
"""
from typing import Any, Dict, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_compress import models
from vit_compress.compress import pruning
from vit_compress.compress import structure
from vit_compress.models import vit as vit_lib

PyTree = Any
LAYER_RULES = ('even', 'odd')


def default_config() -> ml_collections.ConfigDict:
  """`config.student_init`: active when any of layers/num_heads/mlp_dim is set
  (and `config.init_from` names the teacher's saved model)."""
  return ml_collections.ConfigDict({
      'layers': None,      # None | (i, ...) | 'even' | 'odd'
      'num_heads': None,   # None | int | (int per kept layer)
      'mlp_dim': None,     # None | int | (int per kept layer)
      'criterion': 'magnitude',   # pruning.CRITERIA: 'magnitude' | 'taylor' | 'random'
      'taylor_batches': 4,        # training batches the Taylor scores sum over
      'seed': 0,                  # 'random' criterion
  })


def active(spec) -> bool:
  return spec is not None and any(
      spec.get(k) is not None for k in ('layers', 'num_heads', 'mlp_dim'))


def kept_layers(layers, num_layers: int) -> Tuple[int, ...]:
  """The teacher block indices a `layers` spec keeps, in order."""
  if layers is None:
    return tuple(range(num_layers))
  if isinstance(layers, str):
    if layers not in LAYER_RULES:
      raise ValueError(f'student_init.layers={layers!r}: use indices such as '
                       f'(0, 2) or one of {LAYER_RULES}.')
    return tuple(range(0 if layers == 'even' else 1, num_layers, 2))
  kept = tuple(int(i) for i in layers)
  if not kept or sorted(set(kept)) != list(kept) or not all(
      0 <= i < num_layers for i in kept):
    raise ValueError(f'student_init.layers={tuple(layers)}: give distinct '
                     f'increasing block indices in [0, {num_layers}) (the '
                     f'teacher has {num_layers} layers).')
  return kept


def validate(spec, num_layers: Optional[int] = None) -> None:
  """Readable errors for a bad spec (with `num_layers`, also the layer indices)."""
  pruning.CRITERIA.get(spec.criterion)
  layers = spec.layers
  if isinstance(layers, str) and layers not in LAYER_RULES:
    kept_layers(layers, 1)
  if num_layers is not None:
    n = len(kept_layers(layers, num_layers))
    for key in ('num_heads', 'mlp_dim'):
      value = spec.get(key)
      if value is not None and not isinstance(value, int) and len(value) != n:
        raise ValueError(f'student_init.{key}={tuple(value)} has {len(value)} '
                         f'entries but {n} layers are kept.')
  for key in ('num_heads', 'mlp_dim'):
    value = spec.get(key)
    values = [] if value is None else [value] if isinstance(value, int) else value
    if any(not isinstance(v, int) or v < 1 for v in values):
      raise ValueError(f'student_init.{key}={value!r}: positive integers (one, '
                       'or one per kept layer).')


def _top(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k highest scores, in their original order (ties: lower index)."""
  order = np.argsort(-scores, kind='stable')[:k]
  return np.sort(order)


def init_student(teacher_params: PyTree, teacher_config: ml_collections.ConfigDict,
                 spec: ml_collections.ConfigDict, scores: Optional[PyTree] = None
                 ) -> Tuple[PyTree, ml_collections.ConfigDict]:
  """(student params, student model config) taken from a ViT teacher.

  `scores` are element scores shaped like the parameters (criterion
  'taylor', from `taylor_scores`). Host-side: shapes change.
  """
  t = teacher_config.transformer
  num_layers = int(t.num_layers)
  validate(spec, num_layers)
  layers = kept_layers(spec.layers, num_layers)
  heads = vit_lib.per_layer(t.num_heads, num_layers, 'num_heads')
  neurons = vit_lib.per_layer(t.mlp_dim, num_layers, 'mlp_dim')
  wanted = {'head': spec.num_heads, 'neuron': spec.mlp_dim}
  flat_p, treedef = structure.flatten(teacher_params)
  flat_s = structure.flatten(scores)[0] if scores is not None else None
  masks = {p: np.ones(np.shape(x), np.float32) for p, x in flat_p.items()}
  families = [f for f in structure.find_groups(teacher_params, teacher_config)
              if f.encoder == 'Transformer']
  element = pruning.CRITERIA.get(spec.criterion)(
      {p: flat_p[p] for f in families if f.kind != 'layer' for p, _ in f.members},
      flat_s, spec)
  for f in families:
    if f.kind == 'layer':
      if f.layer not in layers:
        for path, _ in f.members:
          masks[path][...] = 0
      continue
    want = wanted[f.kind]
    if want is None or f.layer not in layers:
      continue
    k = want if isinstance(want, int) else want[layers.index(f.layer)]
    total = (heads if f.kind == 'head' else neurons)[f.layer]
    if k > total:
      raise ValueError(f'student_init: {k} {f.kind}s asked in {f.block}, which '
                       f'has {total}.')
    keep = np.zeros((f.size,), np.float32)
    keep[_top(np.asarray(structure.group_scores(f, element)), k)] = 1
    for path, axis in f.members:
      masks[path] = masks[path] * np.asarray(
          structure.expand(f, jnp.asarray(keep), path, axis, masks[path].shape))
  params, config = structure.shrink(teacher_params,
                                    structure.unflatten(treedef, masks),
                                    teacher_config)
  config.name = f'{teacher_config.get("name") or "model"}-student'
  return params, config


def taylor_scores(teacher_config, teacher_params,
                  batches: Iterable[Dict[str, Any]]) -> PyTree:
  """|w * dL/dw| summed over `batches` (labels' cross-entropy), like the
  scores pruning accumulates during training (`pruning.accumulate_taylor`)."""
  module = models.build(teacher_config)

  @jax.jit
  def add(scores, batch):
    def loss(p):
      logits = module.apply({'params': p}, images=batch['image'], train=False)
      return optax.softmax_cross_entropy(logits, batch['labels']).mean()
    return pruning.accumulate_taylor(scores, teacher_params,
                                     jax.grad(loss)(teacher_params))

  scores = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), teacher_params)
  for batch in batches:
    scores = add(scores, {k: batch[k] for k in ('image', 'labels')})
  return scores


def describe(config: ml_collections.ConfigDict) -> str:
  t = config.transformer
  return (f'{t.num_layers} layers, heads {tuple(t.num_heads)}, MLP widths '
          f'{tuple(t.mlp_dim)}')
