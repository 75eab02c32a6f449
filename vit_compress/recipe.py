r"""Recipes: stages chained in one workdir, each resumable, skipped once done.

    python -m vit_compress.main --config=configs/quickstart.py --workdir=/tmp/quickstart

A recipe config is an experiment config with `mode='recipe'`. Its top-level
keys (dataset, data_dir, pp strings, batch sizes, optimiser, seed) are shared
by every stage; `config.recipe` says what runs, in which order:

    config.recipe.order = ('teacher', 'student', 'shrunk', 'int8', 'report', 'export')
    config.recipe.stages.teacher = {'kind': 'train', 'config': {'model': 'Micro_2'}}
    config.recipe.stages.student = {'kind': 'train', 'config': {
        'loss': 'kd', 'teacher': {'checkpoint': 'stage:teacher'},
        'prune': {'method': 'heads_and_neurons', 'sparsity': 0.5}}}
    config.recipe.stages.shrunk = {'kind': 'shrink', 'input': 'stage:student'}

The kinds of stage and their settings are in `stages.py`. The string
'stage:NAME' anywhere in a stage's settings stands for the output of stage
NAME (its model directory; report.json for a report), which must come earlier
in `order`. Every stage and setting is checked before the first one runs
(train stages as whole experiment configs), so a typo in the last stage fails
in seconds, not after the teacher has trained.

Each stage writes into workdir/NAME/ and, when it completes, a DONE marker:
JSON with its output, metrics and seconds, the settings and shared config it
was made with, and the ids of the markers of the stages it read. A rerun
skips every stage that has one, so an interrupted recipe resumes where it
stopped: an interrupted train stage from its last checkpoint, any other stage
from its start. A marker whose settings or shared config have changed since
(keys that a newer version of the code added do not count), or whose inputs
were made again, is an error rather than a silent reuse: delete that stage's
directory (and those of the stages after it) to redo it.
"""
import dataclasses
import json
import os
import re
import time
import uuid
from typing import Any, Dict, List, Optional

from absl import logging
import ml_collections
import tensorflow as tf

from vit_compress import stages as stages_lib
from vit_compress.config_sections import to_dict
from vit_compress.config_sections import with_defaults
from vit_compress.registry import unknown_name_message

REFERENCE = 'stage:'   # 'stage:NAME' -> the output of stage NAME
DONE_FILE = 'DONE'
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def default_config() -> ml_collections.ConfigDict:
  """`config.recipe`: the stage names in run order, and each stage's settings."""
  return ml_collections.ConfigDict({'order': (), 'stages': {}})


@dataclasses.dataclass
class Stage:
  name: str
  kind: str
  settings: ml_collections.ConfigDict   # 'stage:NAME' references resolved
  inputs: List[str]                     # the stages it references
  recorded: Dict[str, Any]              # settings as written ('stage:NAME' kept)
  shared: Dict[str, Any]                # the shared (top-level) config
  output: str


# ---------------------------------------------------------------- planning
def _references(value) -> List[str]:
  """Stage names referenced anywhere inside a (nested) settings value."""
  if isinstance(value, str):
    return [value[len(REFERENCE):]] if value.startswith(REFERENCE) else []
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return [n for v in value.values() for n in _references(v)]
  if isinstance(value, (list, tuple)):
    return [n for v in value for n in _references(v)]
  return []


def _resolve(value, outputs: Dict[str, str]):
  if isinstance(value, str) and value.startswith(REFERENCE):
    return outputs[value[len(REFERENCE):]]
  if isinstance(value, dict):
    return {k: _resolve(v, outputs) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v, outputs) for v in value)
  return value


def _json(value):
  """`value` as its JSON round trip (tuples become lists), for comparisons."""
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def plan(config: ml_collections.ConfigDict, workdir: str) -> List[Stage]:
  """The stages in run order, every setting checked; errors name the key."""
  recipe = with_defaults(config.get('recipe'), default_config(), 'config.recipe')
  order = tuple(recipe.order or ())
  if not order:
    raise ValueError('config.recipe.order is empty: name the stages to run, in '
                     "order, e.g. ('teacher', 'student', 'report').")
  defined = to_dict(recipe.stages)
  outputs, planned = {}, []
  shared = _json({k: v for k, v in to_dict(config).items()
                  if k not in ('recipe', 'mode')})
  for i, name in enumerate(order):
    where = f'config.recipe.stages.{name}'
    if name not in defined:
      raise ValueError(unknown_name_message('stage in config.recipe.order', name,
                                            defined) + f' Define {where}.')
    if not _NAME.match(name) or name in order[:i]:
      raise ValueError(f'config.recipe.order: stage names are distinct directory '
                       f'names (letters, digits, _ . -); got {name!r} in {order}.')
    raw = to_dict(defined[name])
    if 'kind' not in raw:
      raise ValueError(f"{where} has no 'kind'; one of "
                       f'{", ".join(stages_lib.STAGES.names())}.')
    kind_name = raw.pop('kind')
    kind = stages_lib.STAGES.get(kind_name)
    settings = with_defaults(raw, ml_collections.ConfigDict(kind.defaults()), where)
    inputs = _references(settings.to_dict())
    for ref in inputs:
      if ref not in order[:i]:
        raise ValueError(f"{where} refers to '{REFERENCE}{ref}', which is not a "
                         f'stage before {name!r} in config.recipe.order={order}.')
    resolved = ml_collections.ConfigDict(_resolve(settings.to_dict(), outputs),
                                         type_safe=False)
    outputs[name] = kind.output(workdir, name)
    planned.append(Stage(name, kind_name, resolved, sorted(set(inputs)),
                         _json(dict(raw, kind=kind_name)), shared, outputs[name]))
  for stage in planned:   # what can be checked before anything runs
    stages_lib.STAGES.get(stage.kind).check(
        stage.settings, config, f'config.recipe.stages.{stage.name}')
  return planned


# ----------------------------------------------------------------- markers
def marker_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, DONE_FILE)


def read_marker(workdir: str, name: str) -> Optional[Dict[str, Any]]:
  path = marker_path(workdir, name)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _write_marker(workdir: str, name: str, record: Dict[str, Any]) -> None:
  """Written whole or not at all: a temporary file renamed over DONE."""
  path = marker_path(workdir, name)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    f.write(json.dumps(record, indent=2, default=_jsonable))
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def _jsonable(value):
  if hasattr(value, 'item'):   # numpy scalars
    return value.item()
  if hasattr(value, 'tolist'):
    return value.tolist()
  return str(value)


def _flat(value, prefix=''):
  if isinstance(value, dict):
    return {k: v for key, item in value.items()
            for k, v in _flat(item, f'{prefix}{key}.').items()}
  return {prefix.rstrip('.'): value}


def _differences(before: Optional[Dict], now: Dict, common_only=False) -> str:
  """'config.total_steps 1000 -> 900, ...' (empty when equal). `common_only`
  ignores keys that one side lacks (a newer version's added defaults)."""
  before, now = _flat(before or {}), _flat(now)
  keys = set(before) & set(now) if common_only else set(before) | set(now)
  keys = sorted(k for k in keys if before.get(k) != now.get(k))
  text = ', '.join(f'{k} {before.get(k)!r} -> {now.get(k)!r}' for k in keys[:4])
  return text + (f' and {len(keys) - 4} more' if len(keys) > 4 else '')


def _check_markers(planned: List[Stage], workdir: str) -> Dict[str, Dict]:
  """The DONE markers there are; refuses ones that no longer match the recipe."""
  markers = {s.name: read_marker(workdir, s.name) for s in planned}
  for stage in planned:
    done = markers[stage.name]
    if done is None:
      continue
    redo = (f'Delete {os.path.join(workdir, stage.name)} (and the stages after '
            'it) to redo it, or use a new --workdir.')
    changed = _differences(done.get('settings'), stage.recorded)
    if changed:
      raise ValueError(f'Stage {stage.name!r} in {workdir} was completed with '
                       f'other settings: {changed}. {redo}')
    changed = _differences(done.get('shared'), stage.shared, common_only=True)
    if changed:
      raise ValueError(f'Stage {stage.name!r} in {workdir} was completed with '
                       f'another shared (top-level) config: {changed}. {redo}')
    for name in stage.inputs:
      upstream = markers.get(name)
      if upstream is None or upstream['id'] != done['inputs'].get(name):
        raise ValueError(f'Stage {stage.name!r} in {workdir} was made from a '
                         f'{name!r} that is no longer there (it is being redone '
                         f'or was made again). {redo}')
  return markers


# --------------------------------------------------------------------- run
def _number(v) -> str:
  return f'{v:.4g}' if isinstance(v, float) else str(v)


def _describe(stage: Stage) -> str:
  s = stage.settings
  if stage.kind != 'train':
    source = f' of {s.input}' if s.get('input') else ''
    return f'{stage.kind}{source}'
  c = s.config
  model = c.get('model')
  model = model if isinstance(model, str) else (model or {}).get('name', 'model')
  text = f'train {model}'
  if c.get('total_steps'):
    text += f' for {c.total_steps} steps'
  if c.get('loss') in ('kd', 'deit', 'feature'):
    text += f", distilling ({c.loss}) from {c.get('teacher', {}).get('checkpoint')}"
  prune = c.get('prune') or {}
  if prune.get('method', 'none') != 'none':
    text += f", pruning {prune['method']} to {prune.get('sparsity', 0.5):.0%}"
  return text


def _summary(metrics: Dict[str, Any]) -> str:
  """A stage's numbers in one line; for nested ones (report rows, exported
  files) their top-1 and size."""
  parts = []
  for key, value in metrics.items():
    if key == 'accuracy':
      parts.append(f'accuracy {100 * value:.2f} %')
    elif isinstance(value, (int, float, str)):
      parts.append(f'{key} {_number(value)}')
    elif isinstance(value, dict):
      top1 = value.get('top1', value.get('tflite_top1'))
      size = value.get('bytes')
      parts.append(key + ''.join(
          [f' top-1 {top1:.2f} %' if top1 is not None else '',
           f' {size / 1024:.0f} KiB' if size is not None else '']))
  return ', '.join(parts)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Dict]:
  """Runs the stages not yet done; returns every stage's DONE record by name.

  Stops early (returning what is done) when a train stage is stopped by
  SIGTERM: the next run resumes it.
  """
  planned = plan(config, workdir)
  markers = _check_markers(planned, workdir)
  total, start = len(planned), time.time()
  for i, stage in enumerate(planned, 1):
    tag = f'[{i}/{total}] {stage.name}'
    if markers[stage.name] is not None:
      logging.info('%s: done already, skipped (%s).', tag,
                   os.path.join(workdir, stage.name, DONE_FILE))
      continue
    logging.info('%s: %s.', tag, _describe(stage))
    context = stages_lib.Context(stage.name, stage.settings,
                                 os.path.join(workdir, stage.name), workdir,
                                 config)
    began = time.time()
    try:
      result = stages_lib.STAGES.get(stage.kind).run(context)
    except InterruptedError as e:
      logging.warning('%s: %s', tag, e)
      return markers
    record = {'stage': stage.name, 'kind': stage.kind,
              'output': os.path.relpath(result['output'], workdir),
              'metrics': result['metrics'], 'seconds': time.time() - began,
              'settings': stage.recorded, 'shared': stage.shared,
              'id': uuid.uuid4().hex,
              'inputs': {n: markers[n]['id'] for n in stage.inputs},
              'finished': time.strftime('%Y-%m-%d %H:%M:%S')}
    _write_marker(workdir, stage.name, record)
    markers[stage.name] = read_marker(workdir, stage.name)
    logging.info('%s: done in %.0f s. %s', tag, record['seconds'],
                 _summary(result['metrics']))
  logging.info('Recipe complete in %.0f s (this run).', time.time() - start)
  _print_outcome(planned, workdir)
  return markers


def _print_outcome(planned: List[Stage], workdir: str) -> None:
  """The report table and where the files are."""
  from vit_compress.evaluation import report  # pylint: disable=g-import-not-at-top
  for stage in planned:
    if stage.kind == 'report':
      print(report.format_table(report.read_report(workdir)))
      print(f'\nReport: {os.path.join(workdir, "report.md")} (and report.json, '
            'pareto.png)')
    elif stage.kind == 'export':
      files = sorted(f for f in tf.io.gfile.listdir(stage.output)
                     if f.endswith(('.npz', '.tflite')))
      print(f'Exported to {stage.output}: {", ".join(files)}')
