"""Low-rank factorisation of MLP and attention kernels by truncated SVD.

`factorize` replaces each selected kernel W (in, out) of a ViT's MLP blocks
(Dense_0, Dense_1) or attention projections (query, key, value: (D, heads,
head_dim) seen as (D, heads * head_dim); out: (heads * head_dim, D)) by two
factors, kernel_a = U_r sqrt(S_r) (in, r) and kernel_b = sqrt(S_r) V_r^T
(r, out), the best rank-r approximation of W (Eckart-Young). The ranks go into
the model config (`transformer.lowrank`), so `models.build` makes
`LowRankDense` layers with exactly these parameters, the result fine-tunes with
the same trainer, and a saved model reloads from its config.

The rank of each kernel comes from one of:
  energy  the smallest r keeping that fraction of sum(S^2), e.g. 0.95;
  ratio   the factors' share of the kernel's parameters: r = floor(ratio *
          in * out / (in + out)), e.g. 0.5 halves the kernel;
  rank    the same r everywhere.

From the command line (or a recipe's `lowrank` stage), on a saved model:

    python -m vit_compress.compress.lowrank --model=WORKDIR/model \
        --out=WORKDIR/lowrank --ratio=0.5 [--params_regex=...] [--overwrite]
"""
import math
import re
import sys
from typing import Any, Dict, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from vit_compress import models
from vit_compress import param_paths
from vit_compress.models import families

PyTree = Any

DEFAULT_REGEX = r'MlpBlock_0/Dense_[01]/kernel$'
ATTENTION_REGEX = r'MultiHeadDotProductAttention_0/(query|key|value|out)/kernel$'
ALL_REGEX = f'({DEFAULT_REGEX})|({ATTENTION_REGEX})'
_KERNEL = re.compile(
    r'^Transformer/encoderblock_(?P<layer>\d+)/(?:MlpBlock_0/Dense_(?P<dense>[01])|'
    r'MultiHeadDotProductAttention_0/(?P<proj>query|key|value|out))/kernel$')
# transformer.lowrank key of each factorisable kernel.
_RANK_KEY = {'0': 'mlp_rank_0', '1': 'mlp_rank_1', 'query': 'query_rank',
             'key': 'key_rank', 'value': 'value_rank', 'out': 'out_rank'}


def rank_for_energy(singular_values, energy: float) -> int:
  """Smallest r whose top-r singular values keep `energy` of sum(S^2)."""
  if not 0 < energy <= 1:
    raise ValueError(f'energy={energy} must be in (0, 1], e.g. 0.95.')
  power = np.asarray(singular_values, np.float64) ** 2
  kept = np.cumsum(power) / power.sum()
  # A relative tolerance so that energy=1.0 is met despite rounding.
  return int(np.searchsorted(kept, energy - 1e-12) + 1)


def rank_for_ratio(shape: Tuple[int, int], ratio: float) -> int:
  """The rank whose two factors hold `ratio` of the kernel's parameters."""
  fan_in, fan_out = shape
  return int(math.floor(ratio * fan_in * fan_out / (fan_in + fan_out)))


def _svd_factors(kernel, rank: int):
  u, s, vt = np.linalg.svd(np.asarray(kernel, np.float64), full_matrices=False)
  root = np.sqrt(s[:rank])
  dtype = np.asarray(kernel).dtype
  return ((u[:, :rank] * root).astype(dtype), (root[:, None] * vt[:rank]).astype(dtype),
          s)


def factorize(params: PyTree, model_config: ml_collections.ConfigDict, *,
              energy: Optional[float] = None, ratio: Optional[float] = None,
              rank: Optional[int] = None, params_regex: str = DEFAULT_REGEX
              ) -> Tuple[PyTree, ml_collections.ConfigDict]:
  """(new params, new model config) with the selected kernels factorised.

  `params_regex` (re.search over parameter paths) picks the kernels; only
  `Transformer/encoderblock_i/MlpBlock_0/Dense_{0,1}/kernel` and
  `.../MultiHeadDotProductAttention_0/{query,key,value,out}/kernel` can be
  picked (`ALL_REGEX` picks them all).
  Exactly one of `energy`, `ratio`, `rank` sets the ranks.
  """
  if not families.lookup(model_config).lowrank:
    raise ValueError(f"Low-rank factorisation supports ViT models (family 'vit'), "
                     f'not {model_config.get("family")!r}.')
  check_rank_settings(energy, ratio, rank, 'factorize')
  given = {k: v for k, v in (('energy', energy), ('ratio', ratio),
                             ('rank', rank)) if v is not None}

  flat = dict(param_paths.flatten_with_paths(params))
  selected = param_paths.require_match(params, params_regex, 'lowrank params_regex')
  not_mlp = [p for p in selected if not _KERNEL.match(p)]
  if not_mlp:
    raise ValueError(f'lowrank params_regex {params_regex!r} selects {not_mlp[:4]}; '
                     'only MLP kernels (Transformer/encoderblock_i/MlpBlock_0/'
                     'Dense_0 or Dense_1/kernel) and attention projections '
                     '(.../MultiHeadDotProductAttention_0/{query,key,value,out}/'
                     'kernel) can be factorised.')

  num_layers = int(model_config.transformer.num_layers)
  ranks = _current_ranks(model_config, num_layers)
  for path in selected:
    match = _KERNEL.match(path)
    layer, which = int(match['layer']), match['dense'] or match['proj']
    full = np.asarray(flat.pop(path))
    # The matrix the layer applies: its input axes by its output axes.
    split = 2 if which == 'out' else 1
    in_shape, out_shape = full.shape[:split], full.shape[split:]
    kernel = full.reshape(math.prod(in_shape), math.prod(out_shape))
    shape = tuple(kernel.shape)
    if rank is not None:
      r = int(rank)
    elif ratio is not None:
      r = rank_for_ratio(shape, ratio)
    else:
      r = rank_for_energy(np.linalg.svd(np.asarray(kernel, np.float64),
                                        compute_uv=False), energy)
    if r < 1:
      raise ValueError(f'{path} {shape}: {given} gives rank {r}; '
                       'use a larger value (rank >= 1).')
    if r > min(shape):
      raise ValueError(
          f'{path} {shape}: {given} gives rank {r}, more than min(in, out) = '
          f'{min(shape)}, the largest rank this kernel has. Use a smaller '
          f'value (ratio=0.5 gives rank {rank_for_ratio(shape, 0.5)}).')
    a, b, s = _svd_factors(kernel, r)
    kept = float((s[:r] ** 2).sum() / (s ** 2).sum())
    logging.info('%s %s -> rank %d (%.4f of the energy, %d -> %d parameters).',
                 path, shape, r, kept, math.prod(shape), r * sum(shape))
    scope = path[:-len('kernel')]
    flat[scope + 'kernel_a'] = a.reshape(in_shape + (r,))
    flat[scope + 'kernel_b'] = b.reshape((r,) + out_shape)
    ranks[_RANK_KEY[which]][layer] = r

  config = ml_collections.ConfigDict(model_config.to_dict())
  config.transformer.lowrank = {k: tuple(v) for k, v in ranks.items()
                                if k.startswith('mlp') or any(v)}
  new_params = param_paths.tree_from_flat(flat, like=models.param_shapes(config))
  return new_params, config


def _current_ranks(model_config, num_layers) -> Dict[str, list]:
  """Per-layer ranks already in the config (0: full kernel), by lowrank key."""
  from vit_compress.models import vit  # pylint: disable=g-import-not-at-top
  lowrank = model_config.transformer.get('lowrank') or {}
  vit.mlp_ranks(lowrank, num_layers)   # checks the keys
  return {key: list(vit.per_layer(lowrank.get(key, 0), num_layers, key))
          for key in _RANK_KEY.values()}


def flops(model_config: ml_collections.ConfigDict) -> float:
  """FLOPs of one forward pass on one image (XLA cost analysis, no weights)."""
  module = models.build(model_config)
  shapes = models.param_shapes(model_config)
  inputs = jax.eval_shape(lambda: models.example_inputs(model_config, 1))
  lowered = jax.jit(lambda p, kw: module.apply({'params': p}, **kw)).lower(
      shapes, inputs)
  return float(lowered.cost_analysis()['flops'])


def report(model_config: ml_collections.ConfigDict,
           new_config: ml_collections.ConfigDict) -> Dict[str, float]:
  """Parameters and FLOPs (one image) before and after factorising."""
  before = models.count_params(models.param_shapes(model_config))
  after = models.count_params(models.param_shapes(new_config))
  out = {'params_before': before, 'params_after': after,
         'flops_before': flops(model_config), 'flops_after': flops(new_config)}
  logging.info('Low-rank: %d -> %d parameters, %.3g -> %.3g FLOPs per image.',
               before, after, out['flops_before'], out['flops_after'])
  return out


# ------------------------------------------------------------ saved models
def check_rank_settings(energy=None, ratio=None, rank=None, where='lowrank'):
  """Exactly one of energy / ratio / rank, in range; before any work."""
  given = [k for k, v in (('energy', energy), ('ratio', ratio), ('rank', rank))
           if v is not None]
  if len(given) != 1:
    raise ValueError(f'{where}: set exactly one of energy (fraction of squared '
                     'singular values kept, e.g. 0.95), ratio (share of each '
                     'kernel\'s parameters kept, e.g. 0.5) or rank; got '
                     f'{given or "none"}.')
  if energy is not None and not 0 < energy <= 1:
    raise ValueError(f'{where}: energy={energy} must be in (0, 1], e.g. 0.95.')
  if ratio is not None and not ratio > 0:
    raise ValueError(f'{where}: ratio={ratio} must be positive, e.g. 0.5.')
  if rank is not None and (not isinstance(rank, int) or rank < 1):
    raise ValueError(f'{where}: rank={rank!r} must be a positive integer.')


def factorize_saved_model(model_dir: str, out_dir: str, *, energy=None,
                          ratio=None, rank=None, params_regex: str = DEFAULT_REGEX,
                          overwrite: bool = False) -> Dict[str, Any]:
  """Loads a float saved model, factorises it and saves it with its config.

  Refuses an existing `out_dir` unless `overwrite`; every check runs before
  anything is written. Returns the parameter counts and per-layer ranks.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  check_rank_settings(energy, ratio, rank)
  param_paths.compile_regex(params_regex, 'lowrank params_regex')
  model_dir = artifact.resolve(model_dir, '--model')   # not a saved model: refused
  if tf.io.gfile.exists(out_dir) and not overwrite:
    raise FileExistsError(f'{out_dir} exists: choose another --out or pass '
                          '--overwrite to replace it.')
  loaded = artifact.load(model_dir, key='--model', require_float=(
      'factorise the float model it came from.'))
  params, extra = loaded.params, loaded.extra
  # `factorize` is the transform registered as 'lowrank' (transforms.py).
  new_params, new_config = factorize(params, loaded.model_config, energy=energy,
                                     ratio=ratio, rank=rank,
                                     params_regex=params_regex)
  before, after = models.count_params(params), models.count_params(new_params)
  ranks = {k: list(v) for k, v in new_config.transformer.lowrank.items()}
  extra = dict(extra or {}, factorized_from=model_dir, params_before=before,
               params_after=after)
  artifact.save(out_dir, new_params, new_config, extra=extra, overwrite=True)
  return {'params_before': before, 'params_after': after, **ranks}


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string('model', None, 'A saved float model (e.g. WORKDIR/model).')
  flags.DEFINE_string('out', None, 'Where to save the factorised model.')
  flags.DEFINE_float('energy', None, 'Fraction of sum(S^2) each kernel keeps.')
  flags.DEFINE_float('ratio', None, "Share of each kernel's parameters kept.")
  flags.DEFINE_integer('rank', None, 'One rank for every selected kernel.')
  flags.DEFINE_string('params_regex', DEFAULT_REGEX,
                      'Which kernels (re.search over parameter paths); the '
                      f'MLPs by default, {ALL_REGEX!r} adds attention.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.model or not FLAGS.out:
    print('error: give --model=SAVED_MODEL_DIR and --out=NEW_DIR.', file=sys.stderr)
    sys.exit(2)
  try:
    result = factorize_saved_model(
        FLAGS.model, FLAGS.out, energy=FLAGS.energy, ratio=FLAGS.ratio,
        rank=FLAGS.rank, params_regex=FLAGS.params_regex,
        overwrite=FLAGS.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  before, after = result['params_before'], result['params_after']
  ranks = ', '.join(f'{k} {tuple(v)}' for k, v in result.items()
                    if k.endswith('rank') or k.startswith('mlp_rank'))
  print(f'{before} -> {after} parameters ({after / before:.1%}); per-layer ranks '
        f'{ranks}; saved to {FLAGS.out}')


if __name__ == '__main__':
  from vit_compress import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.run_command(main)
