"""Quantization with qwix: post-training (PTQ), quantization-aware training (QAT).

qwix intercepts the `dot_general`s of a Linen model; which ones and how is a
list of qwix rules built here from `config.quant`:

  weight-only int8 / int4   per-channel weight scales, float activations
  conv_dtype='int8'         convolutions too, W8A8 (qwix's PTQ quantizes a
                            conv's input with its weight's type)
  W8A8, dynamic             activation scales computed per token at run time
  W8A8, static              activation scales fixed by a calibration pass over
                            `calibration_batches` batches: qwix's absmax, or a
                            percentile of |x| (qwix 0.1.8 has no percentile
                            method; `_PercentileQtProvider` adds it)
  QAT                       `qat_model` wraps the training model: fake
                            quantization with straight-through gradients

Selection follows the house rule: `exclude` and `include` are regexes over
module paths ('Transformer/encoderblock_0/MlpBlock_0/Dense_0': a parameter's
path without its last name), matched with `re.search`; the first of `exclude`
that matches keeps a module in float. The defaults keep the patch embedding,
the classifier and LayerNorm in float, and only weight layers (Dense,
DenseGeneral) are quantized: attention's activation-by-activation products
(QK^T, PV) stay float, since softmax outliers are what make naive ViT PTQ
collapse.

A PTQ model's parameters are integers plus float scales. `save_quantized`
stores them (int4 packed two to a byte) with a model config that carries the
quant config, so `load_quantized(directory)` rebuilds the model from the
directory alone:

    qparams, qconfig = quantize.quantize(params, model_config, quant_config,
                                         batches=calibration_batches)
    quantize.save_quantized(workdir, qparams, qconfig)
    model, qparams, qconfig = quantize.load_quantized(workdir)
    logits = model.apply({'params': qparams}, images)
"""
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import qwix

from vit_compress import models
from vit_compress.models import families
from vit_compress import qwix_private
from vit_compress import param_paths
from vit_compress import config_sections

PyTree = Any

MODES = ('none', 'ptq', 'qat')
WEIGHT_DTYPES = ('int8', 'int4')
ACT_DTYPES = (None, 'int8')
CALIBRATIONS = ('absmax', 'percentile')
# Patch embedding, classifier (and DeiT head, representation layer), norms.
DEFAULT_EXCLUDE = (r'(^|/)embedding$', r'(^|/)(head|head_dist|pre_logits)$',
                   r'LayerNorm|encoder_norm')
_QUANTIZED_OPS = ('dot_general',)  # weight layers; not attention's einsums
_CONV_OPS = ('conv_general_dilated',)  # with config.quant.conv_dtype
_INT4_PACKED = 'qvalue_int4x2'     # storage key of two int4 values per byte


def default_config() -> ml_collections.ConfigDict:
  """`config.quant`: what to quantize, to which types, and how to calibrate."""
  return ml_collections.ConfigDict({
      'mode': 'none',           # 'none' | 'ptq' | 'qat'
      'weight_dtype': 'int8',   # 'int8' | 'int4' (per output channel)
      'act_dtype': None,        # None (weight-only) | 'int8'
      'act_static': False,      # static activation scales (needs calibration)
      'calibration': 'absmax',  # 'absmax' | 'percentile' (static scales only)
      'percentile': 99.99,      # of |activation|, for calibration='percentile'
      'calibration_batches': 8,
      # Convolutions (MobileViT's, hybrid stems'): None keeps them float;
      # 'int8' quantizes them W8A8 (qwix quantizes a conv's input with the
      # weight's type, so its activations are int8 even when act_dtype=None).
      'conv_dtype': None,
      'exclude': list(DEFAULT_EXCLUDE),  # module-path regexes kept in float
      'include': '.*',          # module-path regex of what may be quantized
  })


def resolve(quant_config: Optional[Any]) -> ml_collections.ConfigDict:
  """`quant_config` completed from the defaults and checked; errors name the key.

  The entry point for a partial quant section (a recipe stage's `quant`
  settings, the one a saved model carries); an experiment config's
  `config.quant` is completed by `config_schema.complete` and checked by `check`.
  """
  return config_sections.complete_section('quant', quant_config)


def check(qc: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks a completed quant section; errors name the key."""
  _check_choice(qc, 'mode', MODES)
  _check_choice(qc, 'weight_dtype', WEIGHT_DTYPES)
  _check_choice(qc, 'act_dtype', ACT_DTYPES)
  _check_choice(qc, 'calibration', CALIBRATIONS)
  _check_choice(qc, 'conv_dtype', ACT_DTYPES)
  if qc.act_static and qc.act_dtype is None:
    raise ValueError("config.quant.act_static=True needs act_dtype='int8' "
                     '(static scales are for quantized activations).')
  if not 0 < qc.percentile <= 100:
    raise ValueError(f'config.quant.percentile={qc.percentile} must be in '
                     '(0, 100], e.g. 99.99.')
  if int(qc.calibration_batches) < 1:
    raise ValueError('config.quant.calibration_batches must be at least 1, got '
                     f'{qc.calibration_batches}.')
  if isinstance(qc.exclude, str):
    raise ValueError('config.quant.exclude is a list of regexes, got the string '
                     f'{qc.exclude!r}; write [{qc.exclude!r}].')
  for pattern in list(qc.exclude) + [qc.include]:
    param_paths.compile_regex(pattern, 'config.quant.exclude / include')
  return qc


config_sections.register('quant', default_config, check)


def _check_choice(qc, key, choices):
  if qc[key] not in choices:
    raise ValueError(f'config.quant.{key}={qc[key]!r}; valid: {list(choices)}.')


def rules(qc: ml_collections.ConfigDict) -> List[qwix.QtRule]:
  """qwix rules, first match wins: the exclusions (float), then the quantized rule.

  `qc` is a completed quant section (`resolve`); the entry points (`quantize`,
  `quantized_model`, `qat_model`, `params_from_storage`) complete theirs once.
  """
  # qwix full-matches module paths; '.*(?:p).*' gives re.search semantics.
  search = lambda pattern: f'.*(?:{pattern}).*'
  out = [qwix.QtRule(module_path=search(p)) for p in qc.exclude]
  if qc.conv_dtype:
    static = bool(qc.act_static)
    out.append(qwix.QtRule(
        module_path=search(qc.include), op_names=_CONV_OPS,
        weight_qtype=qc.conv_dtype, act_qtype=qc.conv_dtype,
        act_static_scale=static))
  out.append(qwix.QtRule(
      module_path=search(qc.include), op_names=_QUANTIZED_OPS,
      weight_qtype=qc.weight_dtype, act_qtype=qc.act_dtype,
      act_static_scale=bool(qc.act_static) if qc.act_dtype else None))
  return out


def quantized_model(model_config: ml_collections.ConfigDict,
                    quant_config: Optional[Any] = None) -> nn.Module:
  """The PTQ module for a model config (default: its own `quant` section)."""
  if quant_config is None:
    quant_config = model_config.get('quant')
    if quant_config is None:
      raise ValueError('model_config has no quant section: it is not a quantized '
                       'model. Pass quant_config, or make one with quantize().')
  return qwix.quantize_model(models.build(model_config),
                             qwix.PtqProvider(rules(resolve(quant_config))))


def qat_model(model: nn.Module, quant_config) -> nn.Module:
  """`model` with fake quantization for training (straight-through gradients).

  Its parameters are the float ones, so a float checkpoint trains as is and
  `quantize(params, ...)` turns the result into an integer model. With static
  activation scales, apply it with `mutable=mutable_collections(quant_config)`
  and hand the collected 'quant_stats' to `quantize`.
  """
  return qwix.quantize_model(model, qwix.QtProvider(rules(resolve(quant_config))))


def mutable_collections(qc: ml_collections.ConfigDict) -> Tuple[str, ...]:
  """Collections a QAT forward pass updates: qwix's running activation stats
  (`qc`: a completed quant section)."""
  return ('quant_stats',) if qc.act_static else ()


# ---------------------------------------------------------------- calibration
class _PercentileQtProvider(qwix_private.ActStatQtProvider):
  """qwix's QT provider, but an activation's statistic is a percentile of |x|.

  qwix calibrates with absmax / minmax / rms / fixed ranges only. Here the
  statistic qwix stores as 'absmax' (averaged over batches, then turned into
  scales by `qwix.quantize_params`) is the percentile of |x| over the batch
  and the contraction axes, one per scale entry (qwix's static scales are per
  token position). Clipping the rare outliers keeps resolution for the rest.
  """

  def __init__(self, quant_rules, percentile: float):
    super().__init__(quant_rules)
    self._percentile = percentile

  def act_statistic(self, rule, lhs, calibration):
    absmax = calibration['absmax']  # shaped like the scale, before averaging
    batch_axes = set(rule.act_batch_axes)
    axes = tuple(i for i, n in enumerate(absmax.shape) if n == 1 or i in batch_axes)
    value = jnp.percentile(jnp.abs(lhs).astype(jnp.float32), self._percentile,
                           axis=axes, keepdims=True)
    return {'absmax': value.astype(absmax.dtype)}


def _model_inputs(model_config, batch) -> Dict[str, Any]:
  """Keyword arguments of the model's call from a batch dict (or an image array)."""
  if not isinstance(batch, Mapping):
    return {'images': jnp.asarray(batch)}
  if 'image' not in batch:
    raise ValueError(f"A calibration batch needs an 'image' entry; got keys "
                     f'{sorted(batch)}.')
  inputs = {'images': jnp.asarray(batch['image'])}
  if families.lookup(model_config).text_inputs and 'tokens' in batch:
    inputs['tokens'] = jnp.asarray(batch['tokens'])
  return inputs


def calibrate(params: PyTree, model_config: ml_collections.ConfigDict,
              batches: Iterable[Any], qc: ml_collections.ConfigDict) -> PyTree:
  """qwix 'quant_stats' (running activation statistics) over calibration batches.

  The pass runs the fake-quantized model (qwix's QT provider), so each layer's
  statistics see the quantized layers before it, as at inference. `qc`: a
  completed quant section (`resolve`).
  """
  if qc.calibration == 'percentile':
    provider = _PercentileQtProvider(rules(qc), qc.percentile)
  else:
    provider = qwix.QtProvider(rules(qc))
  model = qwix.quantize_model(models.build(model_config), provider)

  @jax.jit
  def step(params, quant_stats, inputs):
    _, updated = model.apply({'params': params, 'quant_stats': quant_stats},
                             **inputs, mutable=['quant_stats'])
    return updated['quant_stats']

  params = jax.tree.map(jnp.asarray, params)
  quant_stats, seen = None, 0
  for batch in batches:
    if seen == qc.calibration_batches:
      break
    inputs = _model_inputs(model_config, batch)
    if quant_stats is None:  # zeros, as qwix initialises them
      shapes = jax.eval_shape(model.init, jax.random.key(0), **inputs)
      if 'quant_stats' not in shapes:
        raise ValueError('Calibration found no activation to calibrate: '
                         f'config.quant.include={qc.include!r} and exclude '
                         f'{list(qc.exclude)} leave no quantized weight layer.')
      quant_stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 shapes['quant_stats'])
    quant_stats = step(params, quant_stats, inputs)
    seen += 1
  if not seen:
    raise ValueError('calibrate: the calibration batches are empty.')
  if seen < qc.calibration_batches:
    logging.warning('Calibrated on %d batches; config.quant.calibration_batches '
                    'asked for %d.', seen, qc.calibration_batches)
  logging.info('Calibrated static activation scales (%s) on %d batches.',
               qc.calibration, seen)
  return quant_stats


# ------------------------------------------------------------------------ PTQ
def _abstract_params(model_config, qc: ml_collections.ConfigDict) -> PyTree:
  """The PTQ model's parameter shapes (qwix's templates with how to quantize)."""
  quant_rules = rules(qc)
  provider = qwix.PtqProvider(quant_rules)
  model = qwix.quantize_model(models.build(model_config), provider)
  inputs = models.example_inputs(model_config, 1)
  shapes = jax.eval_shape(model.init, jax.random.key(0), **inputs)['params']
  # Quantizing rules are those with op_names; the others are exclusions. One
  # of them must match (a ViT's only conv, the patch embedding, stays float).
  quantizing = lambda rs: sum(bool(rule.op_names) for rule in rs)
  if quantizing(provider.get_unused_rules()) == quantizing(quant_rules):
    kernels = [p.rsplit('/', 1)[0] for p in param_paths.path_names(shapes)
               if p.endswith('/kernel')]
    raise ValueError(
        f'config.quant.include={qc.include!r} with exclude {list(qc.exclude)} '
        'selects no weight layer to quantize. Module paths are matched with '
        f're.search, e.g. {kernels[:4]}.')
  return shapes


def quantize(params: PyTree, model_config: ml_collections.ConfigDict,
             quant_config: Optional[Any] = None, *,
             batches: Optional[Iterable[Any]] = None,
             quant_stats: Optional[PyTree] = None
             ) -> Tuple[PyTree, ml_collections.ConfigDict]:
  """Float (or QAT-trained) parameters -> (integer parameters, their model config).

  Static activation scales come from `quant_stats` (e.g. collected during
  QAT) or, when not given, from calibrating on `batches`. The returned model
  config is `model_config` plus the `quant` section that rebuilds the model
  (`quantized_model(config)`).
  """
  if quant_config is None:
    quant_config = model_config.get('quant')
  qc = resolve(quant_config)
  qc.mode = 'ptq'  # what the returned parameters are, whatever made them
  params = jax.tree.map(jnp.asarray, params)
  if qc.act_static and quant_stats is None:
    if batches is None:
      raise ValueError('Static activation scales need calibration: pass '
                       'batches= (or quant_stats= from QAT), or set '
                       'config.quant.act_static=False for dynamic scales.')
    quant_stats = calibrate(params, model_config, batches, qc)
  abstract = _abstract_params(model_config, qc)
  # numpy, so that qwix's checks of the counts stay concrete under jit.
  stats = jax.tree.map(np.asarray, quant_stats) if qc.act_static else {}
  # One compiled program rather than many small eager ones.
  qparams = jax.jit(lambda p: qwix.quantize_params(p, abstract, stats))(params)
  config = ml_collections.ConfigDict(model_config.to_dict())
  config.quant = qc.to_dict()
  return qparams, config


# -------------------------------------------------------------------- storage
def is_quantized(x) -> bool:
  return qwix_private.is_quantized_param(x)


def pack_int4(values) -> np.ndarray:
  """int4 values -> uint8, two per byte (low nibble first), flattened."""
  flat = np.asarray(jnp.asarray(values).astype(jnp.int8)).reshape(-1)
  if flat.size % 2:
    flat = np.concatenate([flat, np.zeros(1, np.int8)])
  nibbles = flat.astype(np.uint8) & 0xF
  return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed, shape) -> jax.Array:
  packed = np.asarray(packed, np.uint8)
  nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1)
  values = nibbles[:math.prod(shape)].astype(np.int8)
  values = np.where(values >= 8, values - 16, values).astype(np.int8)  # sign
  return jnp.asarray(values.reshape(shape)).astype(jnp.int4)


def to_storage(qparams: PyTree) -> PyTree:
  """Plain nested dict of numpy arrays: each quantized kernel becomes
  {'qvalue' (int8) or 'qvalue_int4x2' (packed uint8), 'scale'[, 'zero_point']}."""
  def store(leaf):
    if not is_quantized(leaf):
      return np.asarray(leaf)
    array = leaf.array
    if not isinstance(array, qwix.QArray):  # a static activation scale
      return np.asarray(array)
    out = {'scale': np.asarray(array.scale)}
    if array.zero_point is not None:
      out['zero_point'] = np.asarray(array.zero_point)
    if array.qvalue.dtype == jnp.int4:
      out[_INT4_PACKED] = pack_int4(array.qvalue)
    else:
      out['qvalue'] = np.asarray(array.qvalue)
    return out
  return jax.tree.map(store, qparams, is_leaf=is_quantized)


def from_storage(stored: PyTree, abstract: PyTree) -> PyTree:
  """Inverse of `to_storage`, shaped by the PTQ model's abstract parameters."""
  flat = dict(param_paths.flatten_with_paths(stored))
  missing = []

  def get(key, want_shape):
    if key not in flat:
      missing.append(key)
      return np.zeros(want_shape, np.float32)
    return flat[key]

  def load(key_path, template):
    key = param_paths.path_str(key_path)
    if not is_quantized(template):
      return jnp.asarray(get(key, template.shape), template.dtype)
    array = template.array
    if not isinstance(array, qwix.QArray):
      return template.replace(array=jnp.asarray(get(key, array.shape), array.dtype))
    shape = array.qvalue.shape
    if array.qvalue.dtype == jnp.int4:
      qvalue = unpack_int4(get(f'{key}/{_INT4_PACKED}', (0,)), shape)
    else:
      qvalue = jnp.asarray(get(f'{key}/qvalue', shape), array.qvalue.dtype)
    zero_point = None
    if array.zero_point is not None:
      zero_point = jnp.asarray(get(f'{key}/zero_point', array.zero_point.shape),
                               array.zero_point.dtype)
    scale = jnp.asarray(get(f'{key}/scale', array.scale.shape), array.scale.dtype)
    return template.replace(array=qwix.QArray(
        qvalue=qvalue, scale=scale, zero_point=zero_point, qtype=array.qtype))

  out = jax.tree_util.tree_map_with_path(load, abstract, is_leaf=is_quantized)
  if missing:
    raise ValueError(f'The stored quantized parameters lack {len(missing)} '
                     f'arrays the model needs: {missing[:8]}. Was the artifact '
                     'written by save_quantized with this quant config?')
  return out


def dequantize(qparams: PyTree, model_config: ml_collections.ConfigDict
               ) -> Tuple[PyTree, ml_collections.ConfigDict]:
  """(float params, float model config) of a PTQ model: each kernel = its
  integers times its scales; static activation scales are dropped.

  With weight-only quantization the float model computes what the PTQ model
  computes; exporters (TFLite, ONNX) start from this and quantize again.
  """
  config = ml_collections.ConfigDict(
      {k: v for k, v in model_config.to_dict().items() if k != 'quant'})
  leaves, _ = jax.tree_util.tree_flatten_with_path(qparams, is_leaf=is_quantized)
  flat = {param_paths.path_str(k): leaf for k, leaf in leaves}

  def value(path, _):
    leaf = flat[path]
    if is_quantized(leaf):
      leaf = qwix.dequantize(leaf.array)
    return np.asarray(leaf, np.float32)
  return param_paths.map_with_paths(value, models.param_shapes(config)), config


def size_report(qparams: PyTree) -> Dict[str, Any]:
  """Bytes of the quantized kernels as stored vs as float32, and of the model.

  `ratio` compares the quantized layers' kernels in float32 with their
  stored integers plus scales (int8: about 4x, int4: about 8x).
  """
  report = {'quantized_kernels': 0, 'float32_bytes': 0, 'quantized_bytes': 0,
            'model_float32_bytes': 0, 'model_bytes': 0}
  for leaf in jax.tree.leaves(qparams, is_leaf=is_quantized):
    stored = to_storage(leaf)
    nbytes = sum(a.nbytes for a in jax.tree.leaves(stored))
    kernel = is_quantized(leaf) and isinstance(leaf.array, qwix.QArray)
    size = math.prod(leaf.shape)
    report['model_bytes'] += nbytes
    report['model_float32_bytes'] += 4 * (size if kernel else
                                          sum(a.size for a in jax.tree.leaves(stored)))
    if kernel:
      report['quantized_kernels'] += 1
      report['float32_bytes'] += 4 * size
      report['quantized_bytes'] += nbytes
  report['ratio'] = report['float32_bytes'] / max(report['quantized_bytes'], 1)
  return report


def save_quantized(directory: str, qparams: PyTree,
                   model_config: ml_collections.ConfigDict,
                   overwrite: bool = False,
                   extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Writes the integer parameters and the model config (with `quant`); returns
  `size_report(qparams)`, which is also saved in the artifact's extra metadata
  (beside `extra`, under 'quantization')."""
  from vit_compress import checkpoint_files  # pylint: disable=g-import-not-at-top
  if model_config.get('quant') is None:
    raise ValueError('save_quantized needs the model config returned by '
                     'quantize() (it carries the quant section).')
  report = size_report(qparams)
  checkpoint_files.save_model(directory, to_storage(qparams), model_config,
                        extra={**(extra or {}), 'quantization': report},
                        overwrite=overwrite)
  return report


def load_quantized(directory: str
                   ) -> Tuple[nn.Module, PyTree, ml_collections.ConfigDict]:
  """(PTQ module, integer parameters, model config) from a `save_quantized`
  directory. `artifact.load` reads this and every other kind of artifact."""
  from vit_compress import checkpoint_files  # pylint: disable=g-import-not-at-top
  model_config, stored = checkpoint_files.load_model(directory)
  if model_config.get('quant') is None:
    raise ValueError(f'{directory} holds a float model (its config has no quant '
                     'section); load it with artifact.load.')
  return (quantized_model(model_config), params_from_storage(stored, model_config),
          model_config)


def params_from_storage(stored: PyTree, model_config: ml_collections.ConfigDict
                        ) -> PyTree:
  """The PTQ model's parameters from `to_storage`'s arrays and its config."""
  return from_storage(stored, _abstract_params(model_config,
                                               resolve(model_config.quant)))
