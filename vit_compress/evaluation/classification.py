"""Classification metrics over an eval split: top-k accuracy, loss, teacher agreement.

The functions take plain inputs, so the trainer, a standalone run on a saved
model and the report all call the same code:

  model    a Flax module (`model.apply({'params': p}, images)` gives logits),
           or a function `apply_fn(params, images) -> logits`;
  batches  an iterable of dicts: 'image' (B, H, W, 3) float, 'label' (B,)
           int (or 'labels' (B, C) multi-hot), 'mask' (B,) float, 0 for the
           padding examples that fill the last batch (they are not counted).

The forward pass is jitted once; counts are exact integers summed on the
device (one host transfer at the end).
"""
from typing import Any, Callable, Dict, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]


def _logits(out):
  """Logits from what a model returns (DeiT in training mode: the mean of two)."""
  if isinstance(out, Mapping):
    if 'logits' not in out or out['logits'].ndim != 2:
      raise ValueError(
          f'The model returns a dict with keys {sorted(out)}, not class logits. '
          'A LiT model classifies zero-shot: use eval.zero_shot_accuracy.')
    return out['logits']
  if isinstance(out, (tuple, list)):
    return sum(out) / len(out)
  return out


def forward_fn(model) -> ApplyFn:
  """`apply_fn(params, images) -> logits` for a Flax module or an apply function."""
  if isinstance(model, nn.Module):
    return lambda params, images: _logits(model.apply({'params': params}, images))
  if callable(model):
    return lambda params, images: _logits(model(params, images))
  raise TypeError(f'Expected a Flax module or a function (params, images) -> '
                  f'logits, got {type(model).__name__}.')


def _mask(batch, batch_size: int):
  mask = batch.get('mask')
  return jnp.ones((batch_size,), jnp.float32) if mask is None else mask


def _hits(logits, batch, k: int):
  """(B,) bool: one of the k highest logits is a correct class."""
  _, top = jax.lax.top_k(logits, k)
  if 'label' in batch:
    return jnp.any(top == batch['label'][:, None].astype(top.dtype), axis=-1)
  return jnp.any(jnp.take_along_axis(batch['labels'], top, axis=-1) > 0, axis=-1)


def _xent(logits, batch):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  if 'label' in batch:
    return -jnp.take_along_axis(logp, batch['label'][:, None], axis=-1)[:, 0]
  labels = batch['labels'].astype(jnp.float32)
  labels = labels / jnp.maximum(labels.sum(-1, keepdims=True), 1e-9)
  return -jnp.sum(labels * logp, axis=-1)


def _check_batch(batch, where: str):
  if not isinstance(batch, Mapping) or 'image' not in batch:
    raise ValueError(f'{where}: each batch must be a dict with an \'image\' '
                     f'entry, got {type(batch).__name__} '
                     f'{sorted(batch) if isinstance(batch, Mapping) else ""}.')
  if 'label' not in batch and 'labels' not in batch:
    raise ValueError(f"{where}: a batch needs 'label' (B,) ints or 'labels' "
                     f'(B, C); it has {sorted(batch)}.')


def _labels_only(batch):
  return {k: batch[k] for k in ('label', 'labels', 'mask') if k in batch}


def _sum_counts(step, params, batches, where: str) -> Dict[str, float]:
  """Runs the jitted `step` over all batches and sums its per-batch counts."""
  totals = None
  for batch in batches:
    _check_batch(batch, where)
    counts = step(params, batch['image'], _labels_only(batch))
    totals = counts if totals is None else jax.tree.map(jnp.add, totals, counts)
  if totals is None:
    raise ValueError(f'{where}: the batches are empty.')
  totals = {k: float(np.asarray(v)) for k, v in jax.device_get(totals).items()}
  if totals['count'] == 0:
    raise ValueError(f'{where}: every example is padding (mask 0); nothing to count.')
  return totals


def accuracy_fn(model, top_k: Sequence[int] = (1, 5)
                ) -> Callable[[PyTree, Iterable[Mapping[str, Any]]], Dict[str, float]]:
  """`fn(params, batches) -> metrics` of `accuracy`, jitted once: build it once
  and call it at every periodic evaluation."""
  apply_fn = forward_fn(model)

  @jax.jit
  def step(params, images, labels):
    logits = apply_fn(params, images)
    real = _mask(labels, logits.shape[0]) > 0
    counts = {'count': jnp.sum(real, dtype=jnp.int32),
              'loss': jnp.sum(jnp.where(real, _xent(logits, labels), 0.0))}
    for k in sorted(set(top_k)):
      if k == 1 or k < logits.shape[-1]:
        counts[f'top{k}'] = jnp.sum(real & _hits(logits, labels, k), dtype=jnp.int32)
    return counts

  def run(params, batches):
    totals = _sum_counts(step, params, batches, 'eval.accuracy')
    n = totals['count']
    out = {k: 100.0 * v / n for k, v in totals.items() if k.startswith('top')}
    out.update(loss=totals['loss'] / n, count=int(n))
    return out
  return run


def accuracy(model, params: PyTree, batches: Iterable[Mapping[str, Any]], *,
             top_k: Sequence[int] = (1, 5)) -> Dict[str, float]:
  """Top-k accuracy (%) and mean cross-entropy over the real examples.

  Returns {'top1': ..., 'top5': ..., 'loss': ..., 'count': n}; a top-k is
  left out when the model has no more than k classes (it would be 100 %).
  """
  return accuracy_fn(model, top_k)(params, batches)


def agreement_fn(model, teacher
                 ) -> Callable[[PyTree, PyTree, Iterable[Mapping[str, Any]]],
                               Dict[str, float]]:
  """`fn(params, teacher_params, batches) -> metrics` of `agreement`, jitted once."""
  student_fn, teacher_fn = forward_fn(model), forward_fn(teacher)

  @jax.jit
  def step(both, images, labels):
    s_logits = student_fn(both[0], images)
    t_logits = teacher_fn(both[1], images)
    if s_logits.shape[-1] != t_logits.shape[-1]:
      raise ValueError(f'The student has {s_logits.shape[-1]} classes, the '
                       f'teacher {t_logits.shape[-1]}: agreement needs the same.')
    real = _mask(labels, s_logits.shape[0]) > 0
    same = jnp.argmax(s_logits, -1) == jnp.argmax(t_logits, -1)
    return {'count': jnp.sum(real, dtype=jnp.int32),
            'agree': jnp.sum(real & same, dtype=jnp.int32),
            'top1': jnp.sum(real & _hits(s_logits, labels, 1), dtype=jnp.int32),
            'teacher_top1': jnp.sum(real & _hits(t_logits, labels, 1),
                                    dtype=jnp.int32)}

  def run(params, teacher_params, batches):
    totals = _sum_counts(step, (params, teacher_params), batches, 'eval.agreement')
    n = totals['count']
    return {'agreement': 100.0 * totals['agree'] / n,
            'top1': 100.0 * totals['top1'] / n,
            'teacher_top1': 100.0 * totals['teacher_top1'] / n,
            'count': int(n)}
  return run


def agreement(model, params: PyTree, batches: Iterable[Mapping[str, Any]], *,
              teacher, teacher_params: PyTree) -> Dict[str, float]:
  """How often student and teacher predict the same class (%), with both top-1s.

  Both see the same images of each batch. Returns {'agreement', 'top1',
  'teacher_top1', 'count'}.
  """
  return agreement_fn(model, teacher)(params, teacher_params, batches)
