"""The optax optimiser and learning-rate schedule an experiment config asks for.

`make_optimizer(config)` reads `config.optim`, `config.schedule` and
`config.total_steps` and returns `(tx, schedule_fn)`. Both sections are
registered here (`config_sections.register`) and read as completed sections:
`config_schema.complete` fills them once; a hand-built config goes through
`config_sections.complete_sections` first. The chain is

  clip global norm -> [L2 decay, 'sgd'/'adam'] -> momentum / Adam
  -> [decoupled decay, 'adamw'] -> per-path lr multipliers -> -schedule(step)

wrapped, when `frozen` is set, in `optax.multi_transform` so frozen
parameters get exactly-zero updates and no optimiser state at all (LiT's
locked image tower costs no momentum memory). Regexes are checked against
the real parameter paths in `tx.init(params)`, so a typo fails at start-up.

`tx.update(grads, opt_state, params)` needs `params` when weight decay is on.
Parameters and optimiser state stay float32 whatever the compute dtype;
`optim.mu_dtype='bfloat16'` stores only the first moment in bfloat16.
Defaults are vit_jax's fine-tuning recipe: SGD momentum 0.9, lr 0.03,
cosine decay, 500 warm-up steps, global-norm clip 1.0, no weight decay.
"""
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import optax

from vit_compress import config_sections
from vit_compress import param_paths
# Re-exported: optimiser configs are written in terms of these.
from vit_compress.paths import path_names, regex_mask  # pylint: disable=unused-import
from vit_compress.registry import Registry

Schedule = Callable[[Any], jax.Array]

OPTIMIZERS = Registry('optimizer')
DECAYS = Registry('decay_type')


def default_optim_config() -> ml_collections.ConfigDict:
  """Every key `config.optim` may have, with vit_jax's fine-tuning defaults."""
  return ml_collections.ConfigDict({
      'name': 'sgd',                 # 'sgd' | 'adam' | 'adamw'
      'momentum': 0.9,               # sgd; 0 = plain SGD
      'nesterov': False,             # sgd
      'b1': 0.9, 'b2': 0.999, 'eps': 1e-8,  # adam / adamw
      'weight_decay': 0.0,           # coupled L2 for sgd/adam, decoupled for adamw
      'weight_decay_mask': r'(^|/)kernel$',  # decayed params; '' or None = all
      'grad_clip_norm': 1.0,         # global-norm clip; 0 or None = off
      'frozen': config_dict.placeholder(str),  # e.g. '^img/' (LiT)
      'lr_mults': (),                # ((regex, multiplier), ...), first match wins
      'mu_dtype': config_dict.placeholder(str),  # e.g. 'bfloat16'
      'accum_steps': 1,              # read by train.py (gradient accumulation)
  })


def default_schedule_config() -> ml_collections.ConfigDict:
  """Every key `config.schedule` may have (total steps is `config.total_steps`)."""
  return ml_collections.ConfigDict({
      'base_lr': 0.03,
      'warmup_steps': 500,           # linear ramp from 0 to base_lr
      'decay_type': 'cosine',        # 'cosine' | 'linear' | 'constant' | 'rsqrt'
      'end_lr_ratio': 0.0,           # final lr / base_lr (cosine, linear)
      'timescale': 10_000,           # rsqrt: lr = base / sqrt(1 + t / timescale)
  })


config_sections.register('optim', default_optim_config)
config_sections.register('schedule', default_schedule_config)


# ---------------------------------------------------------------- schedules

@DECAYS.register('constant')
def _constant(t, decay_steps, cfg):
  del decay_steps, cfg
  return jnp.ones_like(t)


@DECAYS.register('linear')
def _linear(t, decay_steps, cfg):
  progress = jnp.clip(t / max(decay_steps, 1), 0.0, 1.0)
  return cfg.end_lr_ratio + (1.0 - cfg.end_lr_ratio) * (1.0 - progress)


@DECAYS.register('cosine')
def _cosine(t, decay_steps, cfg):
  progress = jnp.clip(t / max(decay_steps, 1), 0.0, 1.0)
  return cfg.end_lr_ratio + (1.0 - cfg.end_lr_ratio) * 0.5 * (
      1.0 + jnp.cos(math.pi * progress))


@DECAYS.register('rsqrt')
def _rsqrt(t, decay_steps, cfg):
  del decay_steps  # open-ended: the point of rsqrt is not needing a horizon
  if cfg.timescale <= 0:
    raise ValueError(f'config.schedule.timescale must be > 0, got {cfg.timescale}.')
  return 1.0 / jnp.sqrt(1.0 + t / cfg.timescale)


def make_schedule(schedule_config: ml_collections.ConfigDict,
                  total_steps: int) -> Schedule:
  """step -> learning rate: linear warm-up from 0, then `decay_type`.

  `schedule_config` is a completed `config.schedule`
  (`config_sections.complete_section('schedule', partial)` completes one).
  """
  cfg = schedule_config
  decay = DECAYS.get(cfg.decay_type)
  if total_steps is None or int(total_steps) <= 0:
    raise ValueError(f'config.total_steps must be a positive integer, got {total_steps!r}.')
  total_steps, warmup = int(total_steps), int(cfg.warmup_steps)
  if not 0 <= warmup <= total_steps:
    raise ValueError(f'config.schedule.warmup_steps={warmup} must be between 0 and '
                     f'config.total_steps={total_steps}.')
  if cfg.base_lr < 0 or cfg.end_lr_ratio < 0:
    raise ValueError('config.schedule.base_lr and end_lr_ratio must be >= 0, got '
                     f'{cfg.base_lr} and {cfg.end_lr_ratio}.')
  base_lr, decay_steps = float(cfg.base_lr), total_steps - warmup

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ramp = jnp.minimum(step / warmup, 1.0) if warmup else 1.0
    return (base_lr * ramp * decay(jnp.maximum(step - warmup, 0.0), decay_steps, cfg)
            ).astype(jnp.float32)
  return schedule


# ---------------------------------------------------------------- optimisers
# Each returns (direction transform, whether weight decay is decoupled).

def _mu_dtype(cfg):
  if cfg.mu_dtype is None:
    return None
  try:
    return jnp.dtype(cfg.mu_dtype)
  except TypeError:
    raise ValueError(f'config.optim.mu_dtype={cfg.mu_dtype!r} is not a dtype; '
                     "use e.g. 'bfloat16' or None (same as the parameters).") from None


@OPTIMIZERS.register('sgd')
def _sgd(cfg):
  if not cfg.momentum:
    return optax.identity(), False
  return optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov,
                     accumulator_dtype=_mu_dtype(cfg)), False


@OPTIMIZERS.register('adam')
def _adam(cfg):
  return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             mu_dtype=_mu_dtype(cfg)), False


@OPTIMIZERS.register('adamw')
def _adamw(cfg):
  return _adam(cfg)[0], True


# ---------------------------------------------------------------- path helpers

def _lr_mult_rules(lr_mults) -> List[Tuple[str, float]]:
  items = lr_mults.items() if hasattr(lr_mults, 'items') else lr_mults
  rules = []
  for item in items or ():
    if len(item) != 2:
      raise ValueError('config.optim.lr_mults must be (regex, multiplier) pairs, '
                       f'got {item!r}.')
    rules.append((str(item[0]), float(item[1])))
  return rules


def scale_by_path(rules: Sequence[Tuple[str, float]]) -> optax.GradientTransformation:
  """Multiplies each update by the multiplier of the first regex matching its path."""
  compiled = [(param_paths.compile_regex(r, 'config.optim.lr_mults'), m) for r, m in rules]

  def scale(path, u):
    mult = param_paths.first_match(path, compiled, 1.0)
    return u if mult == 1.0 else u * jnp.asarray(mult, u.dtype)

  def update(updates, state, params=None):
    del params
    return param_paths.map_with_paths(scale, updates), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _decay_mask(pattern: Optional[str]):
  if not pattern:
    return None  # decay everything
  return lambda params: regex_mask(params, pattern)


def _checked_on_init(tx: optax.GradientTransformation,
                     checks: Sequence[Tuple[str, str]]) -> optax.GradientTransformation:
  """Checks each (regex, setting name) selects some parameter when `init` sees them."""
  def init(params):
    for pattern, what in checks:
      param_paths.require_match(params, pattern, what)
    return tx.init(params)
  return optax.GradientTransformation(init, tx.update)


def make_optimizer(config: ml_collections.ConfigDict
                  ) -> Tuple[optax.GradientTransformation, Schedule]:
  """(optax transformation, step -> base learning rate) from an experiment
  config whose sections are completed (`config_schema.complete`, or
  `config_sections.complete_sections` for a hand-built one)."""
  cfg = config.optim
  schedule = make_schedule(config.schedule, config.get('total_steps'))
  direction, decoupled = OPTIMIZERS.get(cfg.name)(cfg)
  if cfg.weight_decay < 0:
    raise ValueError(f'config.optim.weight_decay must be >= 0, got {cfg.weight_decay}.')
  if cfg.grad_clip_norm is not None and cfg.grad_clip_norm < 0:
    raise ValueError('config.optim.grad_clip_norm must be > 0 (or None / 0 for no '
                     f'clipping), got {cfg.grad_clip_norm}.')

  checks = []
  decay = None
  if cfg.weight_decay:
    decay = optax.add_decayed_weights(cfg.weight_decay,
                                      mask=_decay_mask(cfg.weight_decay_mask))
    if cfg.weight_decay_mask:
      checks.append((cfg.weight_decay_mask, 'config.optim.weight_decay_mask'))

  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if decay is not None and not decoupled:
    parts.append(decay)  # L2: the decay goes through momentum / Adam's scaling
  parts.append(direction)
  if decay is not None and decoupled:
    parts.append(decay)  # AdamW: decay scaled by the learning rate only
  rules = _lr_mult_rules(cfg.lr_mults)
  if rules:
    parts.append(scale_by_path(rules))
    checks += [(r, 'config.optim.lr_mults') for r, _ in rules]
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)

  if cfg.frozen:
    frozen = param_paths.compile_regex(cfg.frozen, 'config.optim.frozen')
    labels = lambda params: param_paths.map_with_paths(
        lambda path, _: 'frozen' if frozen.search(path) else 'trainable', params)
    # multi_transform hands the 'trainable' chain a tree with frozen leaves
    # masked out, so neither clipping norms nor state ever include them.
    tx = optax.multi_transform({'trainable': tx, 'frozen': optax.set_to_zero()},
                               labels)
    checks.append((cfg.frozen, 'config.optim.frozen'))
  return _checked_on_init(tx, checks), schedule
