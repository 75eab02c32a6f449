"""Training losses by name (`config.loss`), distillation included.

Every loss has one signature:

  fn(student, batch, *, teacher=None, loss_params=None, config)
      -> (scalar loss, {metric name: scalar})

`student` / `teacher` are model-output dicts: 'logits' (B, C), optionally
'dist_logits' (B, C) (DeiT token) and 'intermediates' {name: (B, N, D)};
LiT: 'zimg', 'ztxt', 't', 'logits' (B, B). `batch` has 'labels' (B, C) and/or
'label' (B,) and optionally 'mask' (B,): examples are averaged with these
weights, so padding (mask 0) of a last eval batch never counts.

Teacher outputs are wrapped in stop_gradient here, so no loss can train the
teacher by accident. A loss declares what else it needs where it is defined:
parameters of its own (`LOSS_PARAM_INITS`: the feature loss's projections)
and the model intermediates it reads (`LOSS_INTERMEDIATES`). The train step
never branches on the loss: it calls one `StepLoss`, which captures those
intermediates, keeps the loss's parameters in the train state and optimises
them with their own optimiser.

Config keys (`config.distill`, see `default_distill_config`):
  kd:      temperature, weight (alpha)
  feature: feature_pairs, feature_distance, feature_weight
"""
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_compress import config_sections
from vit_compress.registry import Registry

Outputs = Dict[str, Any]
Metrics = Dict[str, jax.Array]

LOSSES = Registry('loss')
# Losses that own parameters: name -> init(config, rng, student, teacher).
LOSS_PARAM_INITS = Registry('loss with parameters')
# Losses that read intermediates (features, not the teacher's classes):
# name -> fn(config) -> ((student module path, teacher module path), ...).
LOSS_INTERMEDIATES = Registry('loss reading intermediates')
# Losses that need the teacher's outputs.
DISTILLATION_LOSSES = ('kd', 'deit', 'feature')


def default_distill_config() -> ml_collections.ConfigDict:
  """Every key the distillation losses read from `config.distill`."""
  return ml_collections.ConfigDict({
      # kd: loss = weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * xent.
      # T = 1 and weight = 1 (KL only) is big_vision's "patient and
      # consistent" recipe; Hinton-style KD uses e.g. T = 4, weight = 0.9.
      'temperature': 1.0,
      'weight': 1.0,
      # feature: loss = xent + feature_weight * mean over pairs of distance.
      # Pairs of intermediate names, e.g.
      # (('Transformer/encoderblock_1', 'Transformer/encoderblock_11'),).
      'feature_pairs': (),
      'feature_distance': 'l2',      # 'l2' (mean squared error) | 'cosine'
      'feature_weight': 1.0,
  })


config_sections.register('distill', default_distill_config)


def distill_config(config) -> ml_collections.ConfigDict:
  """`config.distill`, completed (`config_schema.complete`); the defaults when
  there is no config at all."""
  if config is None:
    return default_distill_config()
  return config.distill


def needs_teacher(config) -> bool:
  return config.loss in DISTILLATION_LOSSES


def feature_pairs(config) -> Tuple[Tuple[str, str], ...]:
  """(student name, teacher name) pairs whose intermediates the loss reads."""
  pairs = tuple(tuple(p) for p in distill_config(config).feature_pairs)
  for pair in pairs:
    if len(pair) != 2:
      raise ValueError('config.distill.feature_pairs must be (student_name, '
                       f'teacher_name) pairs, got {pair!r}.')
  return pairs


def compares_teacher_classes(config) -> bool:
  """Whether the loss compares the teacher's logits class by class with the
  student's (a feature loss reads intermediates instead)."""
  return config.loss not in LOSS_INTERMEDIATES


# ---------------------------------------------------------------- helpers

def _weighted_mean(values: jax.Array, batch: Dict[str, Any]) -> jax.Array:
  """Mean over examples, weighted by batch['mask'] when present."""
  mask = batch.get('mask')
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(values.dtype)
  # where, not just a product: padding may hold inf (0 * inf would be NaN).
  values = jnp.where(mask > 0, values, 0.0)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1e-8)


def _labels(batch: Dict[str, Any], num_classes: int) -> jax.Array:
  if 'labels' in batch:
    return batch['labels'].astype(jnp.float32)
  if 'label' in batch:
    return jax.nn.one_hot(batch['label'], num_classes)
  raise ValueError("The batch has neither 'labels' (one-hot) nor 'label' (int); "
                 "add onehot(C) to the preprocessing string.")


def _label_ids(batch: Dict[str, Any]) -> jax.Array:
  return batch['label'] if 'label' in batch else jnp.argmax(batch['labels'], -1)


def _logits(outputs: Outputs, key: str, who: str) -> jax.Array:
  if key not in outputs:
    raise ValueError(f'The {who} outputs have no {key!r}; they have '
                   f'{sorted(outputs)}.')
  return outputs[key].astype(jnp.float32)


def _teacher(teacher: Optional[Outputs], loss: str) -> Outputs:
  if teacher is None:
    raise ValueError(f"Loss {loss!r} distils from a teacher but no teacher outputs "
                     'were given; configure a teacher model in config.distill.')
  return jax.lax.stop_gradient(teacher)


def softmax_xent_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _accuracy(logits: jax.Array, batch: Dict[str, Any]) -> jax.Array:
  correct = (jnp.argmax(logits, -1) == _label_ids(batch)).astype(jnp.float32)
  return _weighted_mean(correct, batch)


# ---------------------------------------------------------------- classification

@LOSSES.register('softmax_xent')
def softmax_xent(student, batch, *, teacher=None, loss_params=None, config=None):
  """Softmax cross-entropy against (possibly soft) labels."""
  del teacher, loss_params, config
  logits = _logits(student, 'logits', 'student')
  xent = _weighted_mean(
      softmax_xent_per_example(logits, _labels(batch, logits.shape[-1])), batch)
  return xent, {'xent': xent, 'accuracy': _accuracy(logits, batch)}


@LOSSES.register('sigmoid_xent')
def sigmoid_xent(student, batch, *, teacher=None, loss_params=None, config=None):
  """Per-class binary cross-entropy, summed over classes (multi-label)."""
  del teacher, loss_params, config
  logits = _logits(student, 'logits', 'student')
  labels = _labels(batch, logits.shape[-1])
  per_class = -(labels * jax.nn.log_sigmoid(logits) +
                (1.0 - labels) * jax.nn.log_sigmoid(-logits))
  loss = _weighted_mean(jnp.sum(per_class, axis=-1), batch)
  return loss, {'sigmoid_xent': loss, 'accuracy': _accuracy(logits, batch)}


# ---------------------------------------------------------------- LiT

@LOSSES.register('contrastive')
def contrastive(student, batch, *, teacher=None, loss_params=None, config=None):
  """Symmetric image->text / text->image softmax xent; the diagonal are positives.

  Masked-out examples (padding) are neither anchors nor negatives.
  """
  del teacher, loss_params, config
  logits = _logits(student, 'logits', 'student')
  n = logits.shape[0]
  if logits.shape != (n, n):
    raise ValueError(f"contrastive expects square (B, B) logits, got {logits.shape}; "
                     "is the model a two-tower (LiT) model?")
  mask = batch.get('mask')
  if mask is not None:  # padded texts/images can't be picked as a match
    valid = mask > 0
    neg = -1e9  # exp() of it is exactly 0; finfo.min would overflow to inf below
    i2t_logits = jnp.where(valid[None, :], logits, neg)
    t2i_logits = jnp.where(valid[:, None], logits, neg)
  else:
    i2t_logits = t2i_logits = logits
  i2t = -jnp.diagonal(jax.nn.log_softmax(i2t_logits, axis=1))
  t2i = -jnp.diagonal(jax.nn.log_softmax(t2i_logits, axis=0))
  loss = _weighted_mean((i2t + t2i) / 2, batch)
  hits = lambda l, axis: (jnp.argmax(l, axis=axis) == jnp.arange(n)).astype(jnp.float32)
  metrics = {'contrastive': loss,
             'i2t_accuracy': _weighted_mean(hits(i2t_logits, 1), batch),
             't2i_accuracy': _weighted_mean(hits(t2i_logits, 0), batch)}
  metrics['accuracy'] = metrics['i2t_accuracy']
  if 't' in student:
    metrics['temperature'] = jnp.asarray(student['t'], jnp.float32).reshape(())
  return loss, metrics


# ---------------------------------------------------------------- distillation

def kl_per_example(teacher_logits: jax.Array, student_logits: jax.Array,
                   temperature: float) -> jax.Array:
  """KL(softmax(teacher / T) || softmax(student / T)) per example."""
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _agreement(student_logits, teacher_logits, batch):
  same = jnp.argmax(student_logits, -1) == jnp.argmax(teacher_logits, -1)
  return _weighted_mean(same.astype(jnp.float32), batch)


@LOSSES.register('kd')
def kd(student, batch, *, teacher=None, loss_params=None, config=None):
  """Hinton distillation: weight * T^2 * KL + (1 - weight) * hard-label xent.

  T^2 keeps the soft term's gradients on the scale of the hard term's as T
  changes. With weight 1 the batch needs no labels.
  """
  del loss_params
  cfg = distill_config(config)
  temperature, alpha = float(cfg.temperature), float(cfg.weight)
  if temperature <= 0 or not 0.0 <= alpha <= 1.0:
    raise ValueError('config.distill.temperature must be > 0 and weight in [0, 1]; '
                     f'got {temperature} and {alpha}.')
  teacher = _teacher(teacher, 'kd')
  logits = _logits(student, 'logits', 'student')
  t_logits = _logits(teacher, 'logits', 'teacher')
  kl = _weighted_mean(kl_per_example(t_logits, logits, temperature), batch)
  loss = alpha * temperature ** 2 * kl
  metrics = {'kd': kl, 'agreement': _agreement(logits, t_logits, batch)}
  has_labels = 'labels' in batch or 'label' in batch
  if has_labels or alpha < 1.0:  # without labels _labels raises a clear error
    xent = _weighted_mean(
        softmax_xent_per_example(logits, _labels(batch, logits.shape[-1])), batch)
    metrics.update(xent=xent, accuracy=_accuracy(logits, batch))
    if alpha < 1.0:
      loss = loss + (1.0 - alpha) * xent
  return loss, metrics


@LOSSES.register('deit')
def deit(student, batch, *, teacher=None, loss_params=None, config=None):
  """DeiT hard distillation: class head learns labels, distillation head the teacher's argmax."""
  del loss_params, config
  teacher = _teacher(teacher, 'deit')
  if 'dist_logits' not in student:
    raise ValueError("Loss 'deit' needs the student's 'dist_logits'; build the student "
                   'with model.distill_token=True.')
  logits = _logits(student, 'logits', 'student')
  dist_logits = _logits(student, 'dist_logits', 'student')
  t_logits = _logits(teacher, 'logits', 'teacher')
  xent = _weighted_mean(
      softmax_xent_per_example(logits, _labels(batch, logits.shape[-1])), batch)
  teacher_labels = jax.nn.one_hot(jnp.argmax(t_logits, -1), t_logits.shape[-1])
  dist_xent = _weighted_mean(
      softmax_xent_per_example(dist_logits, teacher_labels), batch)
  loss = (xent + dist_xent) / 2
  # Evaluation averages the two heads, so that is the accuracy to watch.
  return loss, {'xent': xent, 'dist_xent': dist_xent,
                'accuracy': _accuracy((logits + dist_logits) / 2, batch),
                'agreement': _agreement(dist_logits, t_logits, batch)}


def _intermediate(outputs: Outputs, name: str, who: str, cast: bool = True):
  found = outputs.get('intermediates') or {}
  if name not in found:
    raise ValueError(f'config.distill.feature_pairs names {who} intermediate {name!r}, '
                   f'but the {who} outputs have {sorted(found) or "none"}.')
  return found[name].astype(jnp.float32) if cast else found[name]


def _projection_name(index: int) -> str:
  return f'proj_{index}'


def _feature_distance(s: jax.Array, t: jax.Array, kind: str) -> jax.Array:
  """Per-example distance between (B, ..., D) features, averaged over tokens."""
  axes = tuple(range(1, s.ndim))
  if kind == 'l2':
    return jnp.mean(jnp.square(s - t), axis=axes)
  if kind == 'cosine':  # per token, over the feature (last) axis
    cos = jnp.sum(s * t, -1) / (
        jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1) + 1e-8)
    return jnp.mean(1.0 - cos, axis=tuple(range(1, cos.ndim)))
  raise ValueError(f"config.distill.feature_distance must be 'l2' or 'cosine', "
                   f'got {kind!r}.')


@LOSSES.register('feature')
def feature(student, batch, *, teacher=None, loss_params=None, config=None):
  """Hard-label xent + feature_weight * mean distance of paired intermediates.

  Student features are mapped to the teacher's width by a learned linear
  projection (`loss_params['proj_{i}']`) when the widths differ.
  """
  cfg = distill_config(config)
  pairs = feature_pairs(config)
  if not pairs:
    raise ValueError("Loss 'feature' needs config.distill.feature_pairs, e.g. "
                     "(('Transformer/encoderblock_1', 'Transformer/encoderblock_3'),).")
  teacher = _teacher(teacher, 'feature')
  loss_params = loss_params or {}
  distances = []
  for i, (s_name, t_name) in enumerate(pairs):
    s = _intermediate(student, s_name, 'student')
    t = _intermediate(teacher, t_name, 'teacher')
    if s.shape[-1] != t.shape[-1]:
      proj = loss_params.get(_projection_name(i))
      if proj is None:
        raise ValueError(f'Features {s_name!r} (width {s.shape[-1]}) and {t_name!r} '
                         f'(width {t.shape[-1]}) need a projection; create the loss '
                         'parameters with losses.init_loss_params.')
      s = s @ proj['kernel'] + proj['bias']
    if s.shape != t.shape:
      raise ValueError(f'Student feature {s_name!r} {s.shape} and teacher feature '
                       f'{t_name!r} {t.shape} differ in more than width; pair '
                       'layers with the same number of tokens.')
    distances.append(_feature_distance(s, t, cfg.feature_distance))
  feat = _weighted_mean(sum(distances) / len(distances), batch)
  logits = _logits(student, 'logits', 'student')
  xent = _weighted_mean(
      softmax_xent_per_example(logits, _labels(batch, logits.shape[-1])), batch)
  loss = xent + float(cfg.feature_weight) * feat
  return loss, {'xent': xent, 'feature': feat, 'accuracy': _accuracy(logits, batch)}


LOSS_INTERMEDIATES.register('feature')(feature_pairs)


@LOSS_PARAM_INITS.register('feature')
def _init_feature_params(config, rng, student, teacher):
  params = {}
  if teacher is None:
    raise ValueError("Loss 'feature' needs the teacher's outputs (or their shapes) "
                     'to size its projections.')
  for i, (s_name, t_name) in enumerate(feature_pairs(config)):
    d_in = _intermediate(student, s_name, 'student', cast=False).shape[-1]
    d_out = _intermediate(teacher, t_name, 'teacher', cast=False).shape[-1]
    if d_in != d_out:  # LeCun-normal init keeps the projected scale ~ the input's
      kernel = jax.random.normal(jax.random.fold_in(rng, i), (d_in, d_out))
      params[_projection_name(i)] = {'kernel': kernel / jnp.sqrt(d_in),
                                     'bias': jnp.zeros((d_out,))}
  return params


def init_loss_params(config, rng: jax.Array, student: Outputs,
                     teacher: Optional[Outputs]) -> Dict[str, Any]:
  """The loss's own parameters ({} for losses without any).

  `student` / `teacher` may be real outputs or their shapes (jax.eval_shape).
  """
  LOSSES.get(config.loss)  # an unknown name fails here, listing the known ones
  if config.loss not in LOSS_PARAM_INITS:
    return {}
  return LOSS_PARAM_INITS.get(config.loss)(config, rng, student, teacher)


def compute(config, student: Outputs, batch: Dict[str, Any], *,
            teacher: Optional[Outputs] = None, loss_params=None
            ) -> Tuple[jax.Array, Metrics]:
  """The configured loss, `config.loss`, applied."""
  return LOSSES.get(config.loss)(student, batch, teacher=teacher,
                                 loss_params=loss_params, config=config)


# ---------------------------------------------------------------- the step part
class StepLoss:
  """The configured loss as a train-step part; it owns its parameters.

    loss = losses.StepLoss(config, loss_tx)
    state.update(loss.init(rng, student_out, teacher_out))  # {} or its params
    value, metrics = loss(student_out, batch, teacher_out, loss.params(state))
    state.update(loss.update(state, loss_grads))

`student_capture` / `teacher_capture` name the intermediates the model
outputs must carry. A loss without parameters adds nothing to the state
(checkpoints keep their layout), and its gradient is an empty dict.
"""

  def __init__(self, config, tx):
    self.config, self.tx = config, tx
    pairs = (LOSS_INTERMEDIATES.get(config.loss)(config)
             if config.loss in LOSS_INTERMEDIATES else ())
    self.student_capture = tuple(p[0] for p in pairs)
    self.teacher_capture = tuple(p[1] for p in pairs)

  def init(self, rng: jax.Array, student: Outputs,
           teacher: Optional[Outputs]) -> Dict[str, Any]:
    """Train-state entries: 'loss_params' and 'loss_opt_state', if it has any."""
    params = init_loss_params(self.config, rng, student, teacher)
    if not params:
      return {}
    return {'loss_params': params, 'loss_opt_state': self.tx.init(params)}

  @staticmethod
  def params(state) -> Dict[str, Any]:
    return state.get('loss_params', {})

  def __call__(self, student: Outputs, batch: Dict[str, Any],
               teacher: Optional[Outputs], params) -> Tuple[jax.Array, Metrics]:
    return compute(self.config, student, batch, teacher=teacher,
                   loss_params=params)

  def update(self, state, grads) -> Dict[str, Any]:
    """New 'loss_params' / 'loss_opt_state' after one optimiser step ({} if none)."""
    if 'loss_params' not in state:
      return {}
    updates, opt_state = self.tx.update(grads, state['loss_opt_state'],
                                        state['loss_params'])
    return {'loss_params': optax.apply_updates(state['loss_params'], updates),
            'loss_opt_state': opt_state}
