"""The kinds of stage a recipe chains: import, train, shrink, lowrank, quantize,
report, export.

Each kind is registered by name with the settings it accepts (their
defaults) and a function that runs it. A stage reads its inputs (paths, with
'stage:NAME' references already resolved by `recipe`) and writes into its
own directory; it returns {'output': path, 'metrics': {...}} for the stage's
DONE marker. Models are read with `artifact.load` (a workdir root stands
for its model/), changed by the transforms of `transforms.apply` and written
with `artifact.save`. Settings:

  train     config: overrides of the recipe's shared experiment config
            (data, pp, batch sizes) -> a full experiment config, trained by
            `train.train_and_evaluate` in the stage directory (so it resumes
            from its checkpoints); output: the trained model, `<stage>/model`.
            With `init_from` a saved model and no `model` of its own, it
            trains that model's architecture (fine-tuning); with
            `student_init`, a student cut from it (`compress.student_init`).
  import    checkpoint: a vit_jax / big_vision .npz (e.g. gs://vit_models/...),
            model: its zoo name, num_classes: its head's, image_size: the
            resolution to run at (position embeddings resampled; default the
            shared config's) -> a saved model, `<stage>/model`.
  shrink    input: a structurally pruned saved model -> pruned heads,
            neurons and layers removed (`compress.structure.shrink`); `<stage>/model`.
  lowrank   input: a float saved model; one of energy / ratio / rank and
            params_regex (kernels, regex over parameter paths) -> the
            kernels replaced by truncated-SVD factors (`compress.lowrank`),
            fine-tunable by a later train stage (init_from: 'stage:NAME');
            `<stage>/model`.
  quantize  input: a float saved model; quant: `config.quant` keys (PTQ)
            -> integer weights saved with their config (reloads alone with
            `artifact.load`); `<stage>/model`.
  report    variants: [{'name', 'model' (a saved model), 'tome_r', 'runtime',
            'num_calibration'}], scored on the same eval split (config:
            overrides of the shared data settings): top-1, agreement with the
            first variant, params, bytes of the one-file compact artifact
            (`compress.compact`, written to `<stage>/<i>.npz`), FLOPs, img/s
            measured at `batch_sizes` (median of `repeats` runs, then of
            `rounds` rounds over all variants) -> report.json, report.md and
            pareto.png in the recipe's workdir. `runtime` (default 'jax')
            names what a device would run instead: 'tflite' or 'onnx' (the
            float file), or an int8 file 'tflite_int8', 'tflite_int8_dynamic',
            'onnx_int8_dynamic', 'onnx_int8_static' (calibrated on
            `num_calibration` training images). That file is written to
            `<stage>/<i>_<runtime>[_b<B>]` (TFLite: one per batch size) and
            scored, timed (in the same rounds) and sized in its own
            interpreter (`eval.runtimes`); the row's 'runtime' says which.
            The first variant, the reference, runs in 'jax'.
  export    input: a float saved model; formats: of `export.FORMATS` ->
            model.npz (vit_jax layout) and .tflite files (int8 calibrated on
            `num_calibration` training images) in `<stage>/`.
"""
import dataclasses
import os
from typing import Any, Callable, Dict, List

from absl import logging
import ml_collections
import numpy as np

from vit_compress import checkpoint_files
from vit_compress.config_sections import to_dict
from vit_compress.config_sections import with_defaults
from vit_compress.registry import Registry

MODEL_SUBDIR = checkpoint_files.MODEL_SUBDIR   # re-exported: checkpoint_files.py holds the layout
_SECTIONS_REPLACED_WHOLE = ('model',)  # a model override is a whole model


@dataclasses.dataclass
class Context:
  """What a stage's function gets: its settings, directory and the shared config."""
  name: str
  settings: ml_collections.ConfigDict   # references resolved to paths
  directory: str                        # workdir/<name>
  workdir: str                          # the recipe's workdir
  base: ml_collections.ConfigDict       # the recipe's shared experiment config


@dataclasses.dataclass
class StageKind:
  defaults: Callable[[], Dict[str, Any]]  # every setting with its default
  run: Callable[[Context], Dict[str, Any]]
  output: Callable[[str, str], str]       # (workdir, stage name) -> its main output
  # (settings, shared config, 'config.recipe.stages.NAME') -> raises if bad;
  # runs before any stage does, so reads no data and compiles nothing. It
  # completes nested settings (report variants, a quant section) in place,
  # once: `run` reads the completed fields.
  check: Callable[[Any, Any, str], None]


STAGES: Registry[StageKind] = Registry('recipe stage kind')


def _in_model_subdir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, MODEL_SUBDIR)


def experiment_config(base: ml_collections.ConfigDict, overrides: Any
                      ) -> ml_collections.ConfigDict:
  """The shared config with a stage's overrides: sections merge key by key."""
  merged = to_dict(base)
  merged.pop('recipe', None)
  merged['mode'] = 'train'
  for key, value in to_dict(overrides).items():
    if key in ('mode', 'recipe'):
      raise ValueError(f'A stage config cannot set {key!r}: it is a training '
                       'config inside the recipe.')
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    old = merged.get(key)
    if (isinstance(old, dict) and isinstance(value, dict)
        and key not in _SECTIONS_REPLACED_WHOLE):
      value = {**old, **value}
    merged[key] = value
  return ml_collections.ConfigDict(merged, type_safe=False)


def checked_experiment_config(base, overrides, where: str):
  """`experiment_config`, completed and validated; errors name the stage."""
  from vit_compress import config_schema  # pylint: disable=g-import-not-at-top
  try:
    config = config_schema.complete(experiment_config(base, overrides))
    config_schema.validate(config)
  except (ValueError, KeyError, TypeError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise ValueError(f'{where}: {message}') from None
  return config


def _check_input(settings, where: str) -> None:
  if not settings.input:
    raise ValueError(f"{where}.input is not set: a saved model directory or "
                     "'stage:NAME' of an earlier stage.")


def _saved_model(path: str, where: str) -> str:
  """The saved model directory `path` names (a workdir root: its model/)."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  return artifact.resolve(path, where)


# ------------------------------------------------------------------- train
def _model_of_init_from(config, overrides) -> None:
  """A stage that fine-tunes a saved model (init_from, no model of its own, no
  student_init) trains that model's architecture, e.g. a lowrank stage's."""
  init_from = config.get('init_from')
  if ('model' in to_dict(overrides) or not init_from
      or any(v is not None for k, v in to_dict(config.get('student_init')).items()
             if k in ('layers', 'num_heads', 'mlp_dim'))
      or not checkpoint_files.find_model_dir(init_from)):
    return
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  config.model = artifact.read_config(init_from, 'init_from')


def _train(ctx: Context) -> Dict[str, Any]:
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  config = experiment_config(ctx.base, ctx.settings.config)
  _model_of_init_from(config, ctx.settings.config)
  metrics = train.train_and_evaluate(config, ctx.directory)
  if metrics['step'] < config.total_steps:   # stopped by SIGTERM
    raise InterruptedError(f'Stage {ctx.name!r} stopped at step {metrics["step"]} '
                           f'of {config.total_steps}; rerun to resume.')
  return {'output': _in_model_subdir(ctx.workdir, ctx.name), 'metrics': metrics}


STAGES.register('train')(StageKind(
    defaults=lambda: {'config': {}}, run=_train, output=_in_model_subdir,
    check=lambda s, base, where: checked_experiment_config(
        base, s.config, f'{where}.config')))


# ------------------------------------------------------------------ import
def _import(ctx: Context) -> Dict[str, Any]:
  """A public vit_jax / big_vision .npz as a saved model the later stages read."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  from vit_compress import zoo  # pylint: disable=g-import-not-at-top
  settings = ctx.settings
  model_config = zoo.get(settings.model)
  model_config.image_size = settings.image_size or ctx.base.model.image_size
  model_config.num_classes = settings.num_classes
  params = checkpoint_files.load_npz(settings.checkpoint, model_config)
  out = _in_model_subdir(ctx.workdir, ctx.name)
  artifact.save(out, params, model_config,
                extra={'imported_from': settings.checkpoint}, overwrite=True)
  return {'output': out, 'metrics': {'params': models.count_params(params)}}


def _check_import(settings, base, where: str) -> None:
  from vit_compress import zoo  # pylint: disable=g-import-not-at-top
  del base
  if not settings.checkpoint:
    raise ValueError(f'{where}.checkpoint is not set: a vit_jax or big_vision '
                     '.npz (local or gs://).')
  try:
    zoo.get(settings.model or '')
  except KeyError as e:
    raise ValueError(f'{where}.model: {e.args[0]}') from None
  if not isinstance(settings.num_classes, int) or settings.num_classes < 1:
    raise ValueError(f'{where}.num_classes={settings.num_classes!r}: give the '
                     "classes of the checkpoint's head (1000 for ImageNet).")


STAGES.register('import')(StageKind(
    defaults=lambda: {'checkpoint': None, 'model': None, 'image_size': None,
                      'num_classes': None},
    run=_import, output=_in_model_subdir, check=_check_import))


# ------------------------------------------------------------------ shrink
def _shrink(ctx: Context) -> Dict[str, Any]:
  from vit_compress.compress import shrink_cli  # pylint: disable=g-import-not-at-top
  source = _saved_model(ctx.settings.input, f'stage {ctx.name!r} input')
  out = _in_model_subdir(ctx.workdir, ctx.name)
  config, before, after = shrink_cli.shrink_saved_model(source, out)
  t = config.transformer
  return {'output': out, 'metrics': {
      'params_before': before, 'params_after': after,
      'num_heads': np.broadcast_to(t.num_heads, (t.num_layers,)).tolist(),
      'mlp_dim': np.broadcast_to(t.mlp_dim, (t.num_layers,)).tolist()}}


STAGES.register('shrink')(StageKind(
    defaults=lambda: {'input': None}, run=_shrink, output=_in_model_subdir,
    check=lambda s, base, where: _check_input(s, where)))


# ----------------------------------------------------------------- lowrank
def _lowrank(ctx: Context) -> Dict[str, Any]:
  from vit_compress.compress import lowrank  # pylint: disable=g-import-not-at-top
  s = ctx.settings
  source = _saved_model(s.input, f'stage {ctx.name!r} input')
  out = _in_model_subdir(ctx.workdir, ctx.name)
  metrics = lowrank.factorize_saved_model(
      source, out, energy=s.energy, ratio=s.ratio, rank=s.rank,
      params_regex=s.params_regex, overwrite=True)
  return {'output': out, 'metrics': metrics}


def _check_lowrank(settings, base, where: str) -> None:
  from vit_compress import param_paths  # pylint: disable=g-import-not-at-top
  from vit_compress.compress import lowrank  # pylint: disable=g-import-not-at-top
  del base
  _check_input(settings, where)
  lowrank.check_rank_settings(settings.energy, settings.ratio, settings.rank, where)
  param_paths.compile_regex(settings.params_regex, f'{where}.params_regex')


def _lowrank_defaults() -> Dict[str, Any]:
  from vit_compress.compress import lowrank  # pylint: disable=g-import-not-at-top
  return {'input': None, 'energy': None, 'ratio': None, 'rank': None,
          'params_regex': lowrank.DEFAULT_REGEX}


STAGES.register('lowrank')(StageKind(
    defaults=_lowrank_defaults,
    run=_lowrank, output=_in_model_subdir, check=_check_lowrank))


# ---------------------------------------------------------------- quantize
def _quantize(ctx: Context) -> Dict[str, Any]:
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  from vit_compress import calibration  # pylint: disable=g-import-not-at-top
  from vit_compress import transforms  # pylint: disable=g-import-not-at-top
  from vit_compress.evaluation import profiling  # pylint: disable=g-import-not-at-top
  where = f'stage {ctx.name!r} input'
  source = _saved_model(ctx.settings.input, where)
  try:
    loaded = artifact.load(source, key=where, require_float=(
        'quantize the float model it came from.'))
  except ValueError as e:
    raise ValueError(f'Stage {ctx.name!r}: {e}') from None
  qc = ctx.settings.quant   # completed by _check_quantize
  batches = None
  if qc.act_static:
    config = experiment_config(ctx.base, {'model': loaded.model_config})
    batches = calibration.batches(config, qc.calibration_batches)
  qparams, qconfig = transforms.apply('quantize', loaded.params, loaded.model_config,
                                      quant_config=qc, batches=batches)
  out = _in_model_subdir(ctx.workdir, ctx.name)
  sizes = artifact.save(out, qparams, qconfig, overwrite=True)
  return {'output': out, 'metrics': {
      'weight_dtype': qc.weight_dtype, 'act_dtype': qc.act_dtype,
      'kernels_smaller': sizes['ratio'], 'bytes': profiling.artifact_bytes(out),
      'float_bytes': profiling.artifact_bytes(source)}}


def _check_quantize(settings, base, where: str) -> None:
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  del base
  _check_input(settings, where)
  try:
    settings.quant = quantize.resolve(dict(to_dict(settings.quant), mode='ptq'))
  except ValueError as e:
    raise ValueError(f'{where}.quant: {e}') from None


STAGES.register('quantize')(StageKind(
    defaults=lambda: {'input': None, 'quant': {'weight_dtype': 'int8'}},
    run=_quantize, output=_in_model_subdir, check=_check_quantize))


# ------------------------------------------------------------------ report
REPORT_JSON = 'report.json'   # beside it, report.md and pareto.png (eval.write_report)
# runtime: 'jax', or a file a device runs (eval.runtimes: 'tflite', 'onnx',
# 'tflite_int8', ...); num_calibration: training images of a calibrated int8 file.
_VARIANT_DEFAULTS = {'name': None, 'model': None, 'tome_r': 0, 'runtime': 'jax',
                     'num_calibration': 128}


def variants(settings, where: str) -> List[ml_collections.ConfigDict]:
  """The report's variants, each completed from its defaults and checked."""
  out = [with_defaults(v, ml_collections.ConfigDict(_VARIANT_DEFAULTS),
                       f'{where}.variants[{i}]')
         for i, v in enumerate(settings.variants or ())]
  if not out:
    raise ValueError(f"{where}.variants is empty: list the models to compare, "
                     "e.g. [{'name': 'teacher', 'model': 'stage:teacher'}].")
  from vit_compress.evaluation import runtimes  # pylint: disable=g-import-not-at-top
  for i, v in enumerate(out):
    if not v.name or not v.model:
      raise ValueError(f"{where}.variants[{i}] needs a 'name' and a 'model' (a "
                       "saved model directory or 'stage:NAME').")
    runtimes.check(v.runtime, f'{where}.variants[{i}]')
    if v.runtime != runtimes.JAX and (i == 0 or v.tome_r):
      raise ValueError(
          f"{where}.variants[{i}].runtime {v.runtime!r}: the first variant (the "
          "reference for agreement and speedup) and a ToMe variant run in 'jax'; "
          'put the edge variant after a jax one, without tome_r.')
  return out


def _load_variant(variant):
  """(module, params, model config) of a float or quantized saved model, with
  its tome_r."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  where = f'report variant {variant.name!r}'
  path = _saved_model(variant.model, where)
  try:
    return tuple(artifact.load(path, key=where, tome_r=variant.tome_r))
  except ValueError as e:
    raise ValueError(f'Report variant {variant.name!r}: {e}') from None


def load_artifact(path: str, tome_r: int = 0):
  """(module, params, model_config) of any saved artifact: `artifact.load`,
  the one loader (kept under this name for its users)."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  return tuple(artifact.load(path, tome_r=tome_r))


def _eval_batches(config) -> List[Dict[str, np.ndarray]]:
  """The eval split once, as host arrays every variant is scored on."""
  from vit_compress import data  # pylint: disable=g-import-not-at-top
  keep = ('image', 'label', 'labels', 'mask')
  return [{k: np.asarray(v) for k, v in batch.items() if k in keep}
          for batch in data.make_eval_iterator(config)]


def _timing_rounds(rows, measures, rounds: int, timing) -> None:
  """Throughput as the median over `rounds` rounds that time every variant in
  turn (`measures[i]()` -> its img_per_s_b{B}, in JAX or its edge runtime):
  load from other processes then slows all variants alike instead of
  whichever was being timed when it came."""
  measured = [[row] for row in rows]
  for i in range(1, rounds):
    logging.info('Timing round %d of %d.', i + 1, rounds)
    for runs, measure in zip(measured, measures):
      runs.append(measure())
  for row, runs in zip(rows, measured):
    for b in timing['batch_sizes']:
      speed = float(np.median([r[f'img_per_s_b{b}'] for r in runs]))
      row[f'img_per_s_b{b}'], row[f'latency_ms_b{b}'] = speed, 1e3 * b / speed
    row['img_per_s'] = row[f'img_per_s_b{row["batch_size"]}']
    row['timing_rounds'] = rounds


def _check_report(settings, base, where: str) -> None:
  checked_experiment_config(base, settings.config, f'{where}.config')
  settings.variants = variants(settings, where)   # completed once: _report reads them


def _report(ctx: Context) -> Dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  from vit_compress import evaluation  # pylint: disable=g-import-not-at-top
  from vit_compress.compress import compact  # pylint: disable=g-import-not-at-top
  s = ctx.settings
  config = checked_experiment_config(ctx.base, s.config, f'stage {ctx.name!r}')
  batches = _eval_batches(config)
  timing = dict(batch_sizes=tuple(s.batch_sizes), repeats=s.repeats,
                min_run_s=s.min_run_s)
  rows, measures, reference = [], [], {}  # agreement: with the first variant
  reference_logits = []   # its logits per eval batch, made for the first edge row
  for variant in s.variants:   # completed by _check_report
    if variant.runtime != 'jax':
      if not reference_logits:
        teacher = jax.jit(reference['teacher'])
        reference_logits = [np.asarray(teacher(reference['teacher_params'], b['image']))
                            for b in batches]
      row, measure = _edge_row(ctx, variant, len(rows), config, batches,
                               reference_logits, timing)
      rows.append(row)
      measures.append(measure)
      continue
    module, params, model_config = _load_variant(variant)
    # The size column is the one-file artifact a user deploys (compress.compact).
    artifact = os.path.join(ctx.directory, f'{len(rows)}.npz')
    compact.save(artifact, params, model_config)
    # One function object per variant: jax reuses its compilations in every round.
    forward = evaluation.forward_fn(module)
    logging.info('Scoring %s (%s).', variant.name, variant.model)
    row = evaluation.score_variant(variant.name, forward, params, batches,
                                 artifact=artifact, **reference, **timing)
    row['bytes_source'] = 'one-file compact artifact (compress.compact)'
    row['artifact'] = os.path.relpath(variant.model, ctx.workdir)
    row['compact_artifact'] = os.path.relpath(artifact, ctx.workdir)
    row['runtime'] = 'jax'
    if variant.tome_r:
      row['tome_r'] = variant.tome_r
    reference = reference or {'teacher': forward, 'teacher_params': params}
    rows.append(row)
    measures.append(lambda forward=forward, params=params: evaluation.profile(
        forward, params, batches[:1], **timing))
  _timing_rounds(rows, measures, s.rounds, timing)
  paths = evaluation.write_report(rows, ctx.workdir, title=s.title)
  return {'output': paths['json'], 'metrics': {
      r['name']: {'top1': r['top1'], 'img_per_s': r['img_per_s'], 'bytes': r['bytes']}
      for r in rows}}


def _edge_row(ctx: Context, variant, index: int, config, batches, reference_logits,
              timing):
  """(row, measure) of a variant run as its TFLite / ONNX file (eval.runtimes)."""
  from vit_compress import calibration as calibration_lib  # pylint: disable=g-import-not-at-top
  from vit_compress import edge  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  from vit_compress.evaluation import classification  # pylint: disable=g-import-not-at-top
  from vit_compress.evaluation import runtimes  # pylint: disable=g-import-not-at-top
  path = _saved_model(variant.model, f'report variant {variant.name!r}')
  size = int(batches[0]['image'].shape[1])
  try:   # float params; a quantized model's int8 weights times their scales
    model_config, params, _ = edge.load(path, size)
  except ValueError as e:
    raise ValueError(f'Report variant {variant.name!r}: {e}') from None
  forward = classification.forward_fn(models.build(model_config))
  calibration = lambda: [np.concatenate(calibration_lib.images(
      config, variant.num_calibration))[:variant.num_calibration]]
  logging.info('Scoring %s (%s, as %s).', variant.name, variant.model, variant.runtime)
  row, measure = runtimes.score(
      variant.name, variant.runtime, forward, params, batches,
      reference=reference_logits,
      calibration=calibration,
      out_stem=os.path.join(ctx.directory, f'{index}_{variant.runtime}'), **timing)
  row['artifact'] = os.path.relpath(variant.model, ctx.workdir)
  row['edge_file'] = os.path.relpath(row['edge_file'], ctx.workdir)
  return row, measure


STAGES.register('report')(StageKind(
    defaults=lambda: {'variants': [], 'config': {}, 'batch_sizes': (1, 256),
                      'repeats': 5, 'min_run_s': 0.1, 'rounds': 3,
                      'title': 'Compression report'},
    run=_report, output=lambda workdir, name: os.path.join(workdir, REPORT_JSON),
    check=_check_report))


# ------------------------------------------------------------------ export
def _export(ctx: Context) -> Dict[str, Any]:
  from vit_compress import export  # pylint: disable=g-import-not-at-top
  s = ctx.settings
  source = _saved_model(s.input, f'stage {ctx.name!r} input')
  config = checked_experiment_config(ctx.base, s.config, f'stage {ctx.name!r}')
  summary = export.run(config, ctx.directory, tuple(s.formats), model_dir=source,
                       out_dir=ctx.directory, num_calibration=s.num_calibration)
  return {'output': ctx.directory, 'metrics': summary}


def _check_export(settings, base, where: str) -> None:
  from vit_compress import export  # pylint: disable=g-import-not-at-top
  _check_input(settings, where)
  checked_experiment_config(base, settings.config, f'{where}.config')
  unknown = [f for f in settings.formats if f not in export.FORMATS]
  if unknown:
    raise ValueError(f'{where}.formats: unknown {unknown}; choose from '
                     f'{list(export.FORMATS)}.')


STAGES.register('export')(StageKind(
    defaults=lambda: {'input': None, 'config': {},
                      'formats': ('npz', 'tflite', 'tflite_int8'),
                      'num_calibration': 256},
    run=_export, output=os.path.join, check=_check_export))
