"""Pruning masks: which weights are zero, chosen by a criterion on a schedule.

Masks are a pytree with exactly the structure of the parameters: for a pruned
parameter, an array of its shape and dtype (1 keep / 0 pruned); for the others
a scalar 1.0. They live in the train state (checkpointed and sharded like the
parameters) and everything here is jittable except `sparsity`/`log_sparsity`.
A train step uses them like this, so pruned weights stay exactly zero:

    masks = pruning.update_masks(params, masks, step, config.prune, scores)
    params = pruning.apply_masks(params, masks)   # zero what was just pruned
    grads = jax.grad(loss_fn)(pruning.apply_masks(params, masks), batch)
    scores = pruning.accumulate_taylor(scores, params, grads)  # 'taylor' only
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, pruning.mask_updates(updates, masks))

The trainer does not call these one by one: `make(config.prune)` returns one
step part with three hooks (and a no-op part when `method='none'`), so the
step reads the same whether or not it prunes:

    pruner = pruning.make(config.prune)
    state.update(pruner.init(params))                  # 'masks' (+ 'scores')
    params, pruned = pruner.before_step(state)         # masks at this step
    ... grads; updates = tx.update(grads, ...) ...
    updates, pruned = pruner.after_grads(pruned, params, grads, updates)
    state.update(pruned)

`update_masks` is a `lax.cond`: off the schedule's update steps it returns
the masks unchanged, so it can run inside the jitted step every step. Masks
only ever lose entries: what is pruned stays pruned.

Methods: unstructured 'magnitude' (per parameter), 'global_magnitude',
'random', 'n_m' (N of every M consecutive input weights kept, e.g. 2:4), and
structured 'heads', 'neurons', 'heads_and_neurons', 'layers' over the groups
that `structure.find_groups` derives from the model.
"""
import math
import re
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_compress import param_paths
from vit_compress.compress import structure
from vit_compress.registry import Registry, UnknownNameError, unknown_name_message

CRITERIA: Registry = Registry('pruning criterion')
SCHEDULES: Registry = Registry('pruning schedule')
METHODS: Registry = Registry('pruning method')

# Structured methods and the group kinds they remove.
_STRUCTURED = {'heads': ('head',), 'neurons': ('neuron',),
               'heads_and_neurons': ('head', 'neuron'), 'layers': ('layer',)}


def default_config() -> ml_collections.ConfigDict:
  """`config.prune`: what to prune, by which criterion, on which schedule."""
  return ml_collections.ConfigDict({
      'method': 'none',          # see METHODS.names()
      'criterion': 'magnitude',  # 'magnitude' | 'taylor' (|w*g| summed over batches) | 'random'
      'sparsity': 0.5,           # final fraction removed (of weights, or of groups)
      'initial_sparsity': 0.0,   # where 'iterative' / 'gradual' start
      'schedule': 'one_shot',    # 'one_shot' | 'iterative' | 'gradual' (cubic)
      'begin_step': 0,
      'end_step': 0,
      'frequency': 100,          # masks are updated every `frequency` steps
      'n': 2,                    # N:M: keep n of every m consecutive input weights
      'm': 4,
      'scope': 'layer',          # structured: rank groups per 'layer' or 'global'ly
      # Which parameters (regex, re.search over 'a/b/kernel' paths); for structured
      # methods, the blocks whose kernels all match. Default: transformer kernels.
      'params_regex': r'encoderblock_\d+/.+/kernel',  # also low-rank kernel_a/b
      'include_1d': False,       # unstructured: also prune biases / norm scales
      'seed': 0,                 # 'random' criterion
  })


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises a readable error for unknown keys, names or impossible values."""
  known = default_config()
  for key in config:
    if key not in known:
      raise UnknownNameError(unknown_name_message('config.prune key', key, known))
  missing = sorted(set(known) - set(config))
  if missing:
    raise ValueError(f'config.prune lacks {missing}; start from '
                     'vit_compress.compress.pruning.default_config().')
  METHODS.get(config.method)
  CRITERIA.get(config.criterion)
  SCHEDULES.get(config.schedule)
  for key in ('sparsity', 'initial_sparsity'):
    if not 0.0 <= config[key] < 1.0:
      raise ValueError(f'config.prune.{key}={config[key]} must be in [0, 1): it '
                       'is the fraction removed (0.5 removes half).')
  if config.schedule != 'one_shot':
    if config.initial_sparsity > config.sparsity:
      raise ValueError(f'config.prune.initial_sparsity={config.initial_sparsity} is '
                       f'above the final sparsity={config.sparsity}.')
    if config.end_step < config.begin_step:
      raise ValueError(f'config.prune.end_step={config.end_step} is before '
                       f'begin_step={config.begin_step}.')
  if config.frequency < 1:
    raise ValueError(f'config.prune.frequency={config.frequency} must be >= 1.')
  if not 1 <= config.n < config.m:
    raise ValueError(f'N:M pruning needs 1 <= n < m; got n={config.n}, m={config.m}.')
  if config.scope not in ('layer', 'global'):
    raise ValueError(f"config.prune.scope={config.scope!r}; use 'layer' or 'global'.")
  param_paths.compile_regex(config.params_regex, 'config.prune.params_regex')
  return config


# ---------------------------------------------------------------- which params
def _families(params, config) -> List[structure.GroupFamily]:
  """The structural groups this method prunes (empty for unstructured methods)."""
  kinds = _STRUCTURED.get(config.method, ())
  if not kinds:
    return []
  regex = re.compile(config.params_regex)
  flat, _ = structure.flatten(params)
  families = []
  for f in structure.find_groups(params):
    kernels = [p for p, _ in f.members if not _is_vector(p, flat[p].shape)]
    if f.kind in kinds and kernels and all(regex.search(p) for p in kernels):
      families.append(f)
  if not families:
    raise ValueError(f'config.prune.method={config.method!r} found no {kinds} groups '
                     f'whose kernels match params_regex={config.params_regex!r}; '
                     'structured pruning needs a transformer with encoderblock_i.')
  return families


def _pruned_paths(flat_params, config, families) -> List[str]:
  """Paths of the parameters that get a full mask, in tree order."""
  if config.method == 'none':
    return []
  if families:  # structured: whole groups, biases and norms included
    members = {p for f in families for p, _ in f.members}
    return [p for p in flat_params if p in members]
  regex = re.compile(config.params_regex)
  paths = [p for p, x in flat_params.items()
           if regex.search(p) and len(x.shape) >= 1 and
           (config.include_1d or not _is_vector(p, x.shape))]
  if not paths:
    raise ValueError(f'config.prune.params_regex={config.params_regex!r} matches no '
                     f'prunable parameter (include_1d={config.include_1d}); the '
                     f'paths look like {list(flat_params)[:3]}.')
  return paths


def _is_vector(path: str, shape) -> bool:
  """Biases, norm scales and (1, 1, D) tokens: left alone unless include_1d.

  Attention biases are (heads, head_dim) arrays but still biases.
  """
  return (path.rsplit('/', 1)[-1] in ('bias', 'scale') or
          sum(d > 1 for d in shape) <= 1)


def _mask_dtype(x):
  return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32


def init_masks(params, config: ml_collections.ConfigDict):
  """All-ones masks: full arrays for the parameters `config` prunes, else 1.0.

  Accepts arrays or ShapeDtypeStructs (e.g. under `jax.eval_shape`).
  """
  validate(config)
  flat, treedef = structure.flatten(params)
  pruned = set(_pruned_paths(flat, config, _families(params, config)))
  return structure.unflatten(treedef, {
      p: jnp.ones(x.shape, _mask_dtype(x)) if p in pruned else
      jnp.ones((), jnp.float32) for p, x in flat.items()})


def init_scores(params, config: ml_collections.ConfigDict):
  """Zero Taylor scores shaped like `init_masks` (float32; scalars elsewhere)."""
  masks = init_masks(params, config)
  return jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), masks)


def accumulate_taylor(scores, params, grads):
  """Adds the first-order Taylor importance |w * g| per element (jittable)."""
  def add(s, p, g):
    if s.ndim == 0 or s.shape != p.shape:
      return s
    return s + jnp.abs(p.astype(jnp.float32) * g.astype(jnp.float32))
  return jax.tree.map(add, scores, params, grads)


def apply_masks(params, masks):
  """Parameters with pruned entries set to zero (keeps each parameter's dtype)."""
  return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, masks)


def mask_updates(updates, masks):
  """Optimizer updates with pruned entries zeroed, so pruned weights stay 0."""
  return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, masks)


# ---------------------------------------------------------------- schedules
def _on_beat(step, config):
  """Update steps: begin_step, every `frequency` after it, and end_step."""
  begin, end = config.begin_step, config.end_step
  beat = ((step - begin) % config.frequency == 0) | (step == end)
  return (step >= begin) & (step <= end) & beat


def _polynomial(step, config, power: int):
  """Zhu & Gupta: s_f + (s_i - s_f) * (1 - progress) ** power."""
  step = jnp.asarray(step, jnp.int32)
  span = max(config.end_step - config.begin_step, 1)
  progress = jnp.clip((step - config.begin_step) / span, 0.0, 1.0)
  target = config.sparsity + (config.initial_sparsity - config.sparsity) * (
      1.0 - progress) ** power
  return _on_beat(step, config), target.astype(jnp.float32)


@SCHEDULES.register('one_shot')
def _one_shot(step, config):
  """Everything at begin_step."""
  return jnp.asarray(step) == config.begin_step, jnp.float32(config.sparsity)


@SCHEDULES.register('iterative')
def _iterative(step, config):
  """Equal sparsity increments at each update step from begin to end."""
  return _polynomial(step, config, 1)


@SCHEDULES.register('gradual')
def _gradual(step, config):
  """Cubic: prunes fast early, when there are many redundant weights."""
  return _polynomial(step, config, 3)


def scheduled(step, config):
  """(whether masks update at `step`, the target sparsity then), as arrays."""
  return SCHEDULES.get(config.schedule)(step, config)


# ---------------------------------------------------------------- criteria
@CRITERIA.register('magnitude')
def _magnitude(params: Dict[str, jax.Array], scores, config):
  del scores, config
  return {p: jnp.square(x.astype(jnp.float32)) for p, x in params.items()}


@CRITERIA.register('taylor')
def _taylor(params: Dict[str, jax.Array], scores, config):
  del config
  if scores is None:
    raise ValueError("criterion 'taylor' needs scores: make them with "
                     'init_scores(params, config) and accumulate_taylor(...) each '
                     'step, and pass them to update_masks(..., scores=scores).')
  out = {}
  for p, x in params.items():
    if scores[p].shape != x.shape:
      raise ValueError(f'Taylor scores for {p} have shape {scores[p].shape}, not '
                       f'{x.shape}; make them with init_scores(params, config).')
    out[p] = scores[p].astype(jnp.float32)
  return out


@CRITERIA.register('random')
def _random(params: Dict[str, jax.Array], scores, config):
  """Uniform scores from a fixed key: every update ranks the same way."""
  del scores
  key = jax.random.key(config.seed)
  return {p: jax.random.uniform(jax.random.fold_in(key, i), x.shape)
          for i, (p, x) in enumerate(params.items())}


# ---------------------------------------------------------------- methods
def _num_prune(target, n: int):
  # The small epsilon keeps float32 round-off (0.9 * 1000 = 899.99994) from
  # pruning one fewer than asked.
  return jnp.clip(jnp.floor(target * n + 1e-3), 0, n).astype(jnp.int32)


def _keep_top(scores, num_prune):
  """Boolean keep of the same shape: all but the `num_prune` lowest scores."""
  flat = scores.reshape(-1)
  ranks = jnp.argsort(jnp.argsort(flat))
  return (ranks >= num_prune).reshape(scores.shape)


@METHODS.register('none')
def _none(scores, masks, target, config, families):
  del scores, masks, target, config, families
  return {}


@METHODS.register('magnitude')
def _per_parameter(scores, masks, target, config, families):
  del masks, config, families
  return {p: _keep_top(s, _num_prune(target, s.size)) for p, s in scores.items()}


METHODS.register('random')(_per_parameter)  # with the 'random' criterion


@METHODS.register('global_magnitude')
def _global(scores, masks, target, config, families):
  del masks, config, families
  paths = list(scores)
  flat = jnp.concatenate([scores[p].reshape(-1) for p in paths])
  keep = _keep_top(flat, _num_prune(target, flat.size))
  splits = np.cumsum([scores[p].size for p in paths])[:-1]
  return {p: k.reshape(scores[p].shape)
          for p, k in zip(paths, jnp.split(keep, splits))}


@METHODS.register('n_m')
def _n_m(scores, masks, target, config, families):
  """Keeps the n highest of every m consecutive weights along the input axes."""
  del masks, target, families  # the sparsity is fixed at 1 - n / m
  n, m = config.n, config.m
  out = {}
  for path, s in scores.items():
    k = structure.input_axes(path, s.ndim)
    rows, cols = math.prod(s.shape[:k]), math.prod(s.shape[k:])
    if rows % m:
      raise ValueError(f'{path} has {rows} inputs, not divisible by m={m}; N:M '
                       'groups run along the input axis. Exclude it with '
                       'config.prune.params_regex or choose another m.')
    groups = s.reshape(rows // m, m, cols)
    ranks = jnp.argsort(jnp.argsort(groups, axis=1), axis=1)
    out[path] = (ranks >= m - n).reshape(s.shape)
  return out


def _prune_pool(pool: List[jax.Array], target, keep_one_each: bool):
  """Ranks groups pooled from several families; keeps the best of each (or of all)."""
  if keep_one_each:
    pool = [g.at[jnp.argmax(g)].set(jnp.inf) for g in pool]
  flat = jnp.concatenate(pool)
  if not keep_one_each:
    flat = flat.at[jnp.argmax(flat)].set(jnp.inf)
  reserved = len(pool) if keep_one_each else 1
  num = jnp.minimum(_num_prune(target, flat.size), flat.size - reserved)
  keep = _keep_top(flat, num)
  return jnp.split(keep, np.cumsum([g.size for g in pool])[:-1])


def _structured(scores, masks, target, config, families):
  """Removes whole heads / neurons / layers by their summed element scores."""
  group = {}
  for f in families:
    s = structure.group_scores(f, scores)
    alive = structure.group_scores(f, masks) > 0
    group[f] = jnp.where(alive, s, -jnp.inf)  # pruned groups stay pruned
  pools = []
  for kind in sorted({f.kind for f in families}):
    of_kind = [f for f in families if f.kind == kind]
    if kind == 'layer':  # rank the layers of each encoder; keep at least one
      for encoder in sorted({f.encoder for f in of_kind}):
        pools.append(([f for f in of_kind if f.encoder == encoder], False))
    elif config.scope == 'global':  # at least one head / neuron per layer
      pools.append((of_kind, True))
    else:
      pools.extend(([f], True) for f in of_kind)
  out = {}
  for pool, keep_one_each in pools:
    keeps = _prune_pool([group[f] for f in pool], target, keep_one_each)
    for f, keep in zip(pool, keeps):
      for path, axis in f.members:
        out[path] = structure.expand(f, keep, path, axis, scores[path].shape)
  return out


for _name in _STRUCTURED:
  METHODS.register(_name)(_structured)


# ---------------------------------------------------------------- update
def _new_masks(params, masks, target, config, scores):
  flat_p, _ = structure.flatten(params)
  flat_m, treedef = structure.flatten(masks)
  families = _families(params, config)
  paths = _pruned_paths(flat_p, config, families)
  for p in paths:
    if flat_m[p].shape != flat_p[p].shape:
      raise ValueError(f'The mask of {p} has shape {flat_m[p].shape}, not '
                       f'{flat_p[p].shape}: make masks with init_masks(params, '
                       'config) for this same config.prune.')
  criterion = 'random' if config.method == 'random' else config.criterion
  flat_s = structure.flatten(scores)[0] if scores is not None else None
  elements = CRITERIA.get(criterion)({p: flat_p[p] for p in paths}, flat_s, config)
  if not families:  # unstructured: pruned weights rank lowest and stay pruned
    elements = {p: jnp.where(flat_m[p] > 0, s, -jnp.inf) for p, s in elements.items()}
  keep = METHODS.get(config.method)(
      elements, {p: flat_m[p] for p in paths}, target, config, families)
  new = dict(flat_m)
  for p, k in keep.items():
    new[p] = flat_m[p] * k.astype(flat_m[p].dtype)
  return structure.unflatten(treedef, new)


def update_masks(params, masks, step, config: ml_collections.ConfigDict,
                 scores=None):
  """New masks at the schedule's update steps, the same masks otherwise.

  Pure and jittable: under `jit` a `lax.cond` on the traced step; with a
  concrete step (host-side) a plain `if`. Pass the Taylor `scores` with
  criterion 'taylor'.
  """
  validate(config)
  if config.method == 'none':
    return masks
  update, target = scheduled(step, config)
  try:  # a concrete step (host-side call): no need to compile both branches
    update = bool(update)
  except jax.errors.ConcretizationTypeError:
    return jax.lax.cond(
        update, lambda: _new_masks(params, masks, target, config, scores),
        lambda: masks)
  return _new_masks(params, masks, target, config, scores) if update else masks


# ---------------------------------------------------------------- the step part
PyTree = Any
StateEntries = Dict[str, PyTree]


class NoPruning:
  """The step part when nothing is pruned: every hook leaves things as they are."""

  def init(self, params) -> StateEntries:
    del params
    return {}

  def before_step(self, state) -> Tuple[PyTree, StateEntries]:
    return state['params'], {}

  def after_grads(self, entries: StateEntries, params, grads, updates
                  ) -> Tuple[PyTree, StateEntries]:
    del params, grads
    return updates, entries


class Pruner(NoPruning):
  """Pruning as a train-step part: masks (and Taylor scores) in the train state.

  `init` adds 'masks' (+ 'scores' with criterion 'taylor') to the state;
  `before_step` updates the masks at the state's step and returns the masked
  parameters, so the forward pass sees the pruned zeros; `after_grads` zeroes
  the pruned entries of the optimiser's updates (they stay exactly zero) and
  accumulates the Taylor scores from these gradients.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def init(self, params) -> StateEntries:
    entries = {'masks': init_masks(params, self.config)}
    if self.config.criterion == 'taylor':
      entries['scores'] = init_scores(params, self.config)
    return entries

  def before_step(self, state) -> Tuple[PyTree, StateEntries]:
    masks = update_masks(state['params'], state['masks'], state['step'],
                         self.config, state.get('scores'))
    entries = {'masks': masks}
    if 'scores' in state:
      entries['scores'] = state['scores']
    return apply_masks(state['params'], masks), entries

  def after_grads(self, entries: StateEntries, params, grads, updates
                  ) -> Tuple[PyTree, StateEntries]:
    entries = dict(entries)
    if 'scores' in entries:  # first-order Taylor importance, |w * g| summed
      entries['scores'] = accumulate_taylor(entries['scores'], params, grads)
    return mask_updates(updates, entries['masks']), entries


def make(config: ml_collections.ConfigDict) -> NoPruning:
  """The train-step part for `config.prune` (a no-op one for method 'none')."""
  return NoPruning() if config.method == 'none' else Pruner(config)


def masked_params(state):
  """A train state's parameters with its masks applied (if it has any)."""
  if 'masks' in state:
    return apply_masks(state['params'], state['masks'])
  return state['params']


# ---------------------------------------------------------------- reporting
def sparsity(masks, params) -> Dict[str, float]:
  """Fractions pruned: 'total' (of all parameters), 'total_prunable' (of the
  masked ones) and one entry per masked parameter path. Host-side."""
  flat_m, _ = structure.flatten(masks)
  flat_p, _ = structure.flatten(params)
  out: Dict[str, Any] = {}
  zeros_all = size_all = zeros_masked = size_masked = 0
  for path, p in flat_p.items():
    m, size = flat_m[path], math.prod(p.shape)
    size_all += size
    if np.ndim(m) == 0:
      zeros_all += 0 if float(m) else size
      continue
    zeros = size - int(jnp.count_nonzero(m))
    zeros_all += zeros
    zeros_masked += zeros
    size_masked += size
    out[path] = zeros / size
  return {'total': zeros_all / max(size_all, 1),
          'total_prunable': zeros_masked / max(size_masked, 1), **out}


def log_sparsity(masks, params, step: Optional[int] = None) -> Dict[str, float]:
  """Logs total and per-parameter sparsity (absl) and returns `sparsity()`."""
  stats = sparsity(masks, params)
  at = '' if step is None else f' at step {step}'
  logging.info('Sparsity%s: %.2f%% of all parameters, %.2f%% of the pruned ones.',
               at, 100 * stats['total'], 100 * stats['total_prunable'])
  for path, value in stats.items():
    if path not in ('total', 'total_prunable'):
      logging.info('  %-70s %6.2f%%', path, 100 * value)
  return stats
