"""The compression report: variants scored on the same data, as json, markdown and a plot.

A row is a dict with at least 'name', 'top1' (%), 'params', 'bytes',
'flops' (per image) and 'img_per_s' (measured, at 'batch_size'); the output
of `eval.profile` merged with the accuracy metrics has all of them. Extra
keys (top5, agreement, sparsity, img_per_s_b1, peak_bytes, ...) are kept.
`write_report` adds the speedup and the size reduction against the first
row (the reference, usually the teacher or the uncompressed model).
"""
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from vit_compress.evaluation import classification
from vit_compress.evaluation import profiling

REQUIRED = ('name', 'top1', 'params', 'bytes', 'flops', 'img_per_s')
MIB = 2**20


def _check_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  if not rows:
    raise ValueError('The report needs at least one row.')
  out = []
  for i, row in enumerate(rows):
    missing = [k for k in REQUIRED if row.get(k) is None]
    if missing:
      raise ValueError(f'Report row {i} ({row.get("name", "unnamed")!r}) lacks '
                       f'{missing}: every row needs {list(REQUIRED)} (merge the '
                       'metrics of eval.accuracy with eval.profile).')
    out.append({k: _plain(v) for k, v in row.items()})
  names = [r['name'] for r in out]
  if len(set(names)) != len(names):
    raise ValueError(f'Report rows need distinct names; got {names}.')
  return out


def _plain(value):
  """numpy scalars -> Python numbers, so the json is plain."""
  if isinstance(value, np.generic):
    return value.item()
  return value


def with_relative(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Rows plus 'speedup' (img/s over the first row's) and 'size_ratio'
  (the first row's bytes over this row's: how many times smaller)."""
  rows = _check_rows(rows)
  ref = rows[0]
  for row in rows:
    row['speedup'] = row['img_per_s'] / ref['img_per_s']
    row['size_ratio'] = ref['bytes'] / row['bytes']
  return rows


def score_variant(name: str, model, params, batches, *,
                  artifact: Optional[str] = None, teacher=None,
                  teacher_params=None, **profile_kwargs) -> Dict[str, Any]:
  """One report row: accuracy, agreement with `teacher` (if given) and profile.

  `batches` is a list (it is read once per measurement) or a function that
  returns a fresh iterable; `profile_kwargs` go to `eval.profile`
  (batch_sizes, repeats, ...).
  """
  make = batches if callable(batches) else (lambda: batches)
  row = {'name': name, **classification.accuracy(model, params, make())}
  if teacher is not None:
    row['agreement'] = classification.agreement(
        model, params, make(), teacher=teacher,
        teacher_params=teacher_params)['agreement']
  row.update(profiling.profile(model, params, make(), artifact=artifact,
                               **profile_kwargs))
  return row


# ------------------------------------------------------------------ markdown
def _num(x: float) -> str:
  """Three significant digits, never scientific (1,243 / 12.4 / 0.102)."""
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return 'n/a'
  ax = abs(x)
  if ax >= 100:
    return f'{x:,.0f}'
  if ax >= 10:
    return f'{x:.1f}'
  if ax >= 1:
    return f'{x:.2f}'
  return f'{x:.3g}'


def _flops_unit(rows):
  top = max(r['flops'] for r in rows)
  for scale, unit in ((1e12, 'TFLOPs'), (1e9, 'GFLOPs'), (1e6, 'MFLOPs')):
    if top >= scale:
      return scale, unit
  return 1e3, 'kFLOPs'


def _columns(rows):
  """(header, cell function) for each column some row has a value for."""
  has = lambda key: any(r.get(key) is not None for r in rows)
  batches = {r.get('batch_size') for r in rows}
  same_batch = len(batches) == 1 and None not in batches
  flops_scale, flops_unit = _flops_unit(rows)
  cols = [('variant', lambda r: str(r['name']))]
  if any(r.get('runtime', 'jax') != 'jax' for r in rows):
    cols.append(('runtime', lambda r: str(r.get('runtime', 'jax'))))
  cols.append(('top-1 (%)', lambda r: f'{r["top1"]:.2f}'))
  if has('top5'):
    cols.append(('top-5 (%)', lambda r: _opt(r, 'top5', '{:.2f}')))
  if has('agreement'):
    # Agreement is with the first row (the teacher, or the float model).
    cols.append((f'agrees w/ {rows[0]["name"]} (%)',
                 lambda r: _opt(r, 'agreement', '{:.2f}')))
  cols.append(('params', lambda r: f'{r["params"]:,}'))
  if has('nonzero_params'):
    cols.append(('non-zero params', lambda r: _opt(r, 'nonzero_params', '{:,}')))
  cols += [('size (MiB)', lambda r: _num(r['bytes'] / MIB)),
           ('smaller (×)', lambda r: _num(r['size_ratio'])),
           (f'{flops_unit}/img', lambda r: _num(r['flops'] / flops_scale))]
  if has('img_per_s_b1'):
    cols.append(('img/s (batch 1)', lambda r: _opt(r, 'img_per_s_b1', None)))
  if same_batch:
    cols.append((f'img/s (batch {batches.pop()})', lambda r: _num(r['img_per_s'])))
  else:
    cols.append(('img/s (batch)', lambda r: f'{_num(r["img_per_s"])} '
                 f'({r.get("batch_size", "?")})'))
  cols.append(('speedup (×)', lambda r: _num(r['speedup'])))
  if has('compiled_bytes'):
    cols.append(('XLA memory (MiB)', lambda r: _opt(r, 'compiled_bytes', 'MiB')))
  if has('peak_bytes'):
    cols.append(('peak memory (MiB)', lambda r: _opt(r, 'peak_bytes', 'MiB')))
  return cols


def _opt(row, key, fmt):
  value = row.get(key)
  if value is None:
    return 'n/a'
  if fmt == 'MiB':
    return _num(value / MIB)
  return _num(value) if fmt is None else fmt.format(value)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The rows as a markdown table (relative columns computed from row 0)."""
  rows = with_relative(rows)
  cols = _columns(rows)
  lines = ['| ' + ' | '.join(h for h, _ in cols) + ' |',
           '|' + '|'.join(':---' if i == 0 else '---:' for i in range(len(cols))) + '|']
  lines += ['| ' + ' | '.join(cell(r) for _, cell in cols) + ' |' for r in rows]
  return '\n'.join(lines)


def _notes(rows) -> List[str]:
  devices = sorted({str(r['device']) for r in rows if r.get('device')})
  notes = [f'Reference for speedup and size: {rows[0]["name"]!r}.',
           'Throughput: forward pass compiled once, warmed up, median of timed '
           'runs, each call waited for' + (f', on {", ".join(devices)}' if devices else '') + '.',
           'FLOPs: XLA cost analysis of the compiled forward, per image '
           '(a multiply-add counts 2).']
  if any(r.get('runtime', 'jax') != 'jax' for r in rows):
    notes.append('Runtime: jax rows run the saved model compiled by XLA; the '
                 'others run its TFLite / ONNX file in LiteRT / ONNX Runtime '
                 "('edge_file' in report.json), which their top-1, img/s and size "
                 'measure; their params and FLOPs are the source model\'s.')
  sources = sorted({str(r['bytes_source']) for r in rows if r.get('bytes_source')})
  if sources:
    notes.append(f'Size: {" / ".join(sources)} (per row in report.json, '
                 "'bytes_source').")
  if any('peak_bytes' in r for r in rows) and all(r.get('peak_bytes') is None
                                                  for r in rows):
    notes.append('Peak memory: not reported by the runtime on this device '
                 '(null in report.json); XLA memory is the compiled forward\'s '
                 'arguments + outputs + temporaries.')
  return notes


def print_table(rows: Sequence[Dict[str, Any]]) -> None:
  print(format_table(rows))


# ---------------------------------------------------------------------- files
def write_report(rows: Sequence[Dict[str, Any]], workdir: str,
                 title: str = 'Compression report') -> Dict[str, str]:
  """Writes report.json, report.md and pareto.png into `workdir`; returns their paths."""
  from vit_compress.evaluation import pareto  # pylint: disable=g-import-not-at-top
  rows = with_relative(rows)
  tf.io.gfile.makedirs(workdir)
  paths = {k: os.path.join(workdir, f) for k, f in
           (('json', 'report.json'), ('md', 'report.md'), ('png', 'pareto.png'))}
  with tf.io.gfile.GFile(paths['json'], 'w') as f:
    f.write(json.dumps(rows, indent=2))
  notes = ''.join(f'- {n}\n' for n in _notes(rows))
  with tf.io.gfile.GFile(paths['md'], 'w') as f:
    f.write(f'# {title}\n\n{format_table(rows)}\n\n{notes}\n'
            '![accuracy against throughput and size](pareto.png)\n')
  pareto.plot_pareto(rows, paths['png'], title=title)
  return paths


def read_report(workdir: str) -> List[Dict[str, Any]]:
  with tf.io.gfile.GFile(os.path.join(workdir, 'report.json')) as f:
    return json.load(f)


def plot_pareto(rows, path: str, title: Optional[str] = None) -> str:
  from vit_compress.evaluation import pareto  # pylint: disable=g-import-not-at-top
  return pareto.plot_pareto(with_relative(rows), path, title=title)
