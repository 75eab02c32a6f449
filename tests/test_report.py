"""Report: json / markdown / Pareto plot of variants, from real measurements."""
import json
import os

import jax
import matplotlib.image
import numpy as np
import pytest

from vit_compress import checkpoint
from vit_compress import evaluation
from vit_compress import models
from vit_compress import zoo
from vit_compress.evaluation import pareto
from vit_compress.evaluation import report


def _row(name, top1, img_per_s, mib, **extra):
  return dict(name=name, top1=top1, params=1000, bytes=int(mib * 2**20),
              flops=2.5e6, img_per_s=img_per_s, batch_size=64, **extra)


def test_write_report_adds_relative_columns_and_writes_three_files(tmp_path):
  rows = [_row('teacher', 95.0, 1000.0, 4.0, top5=99.5, peak_bytes=None),
          _row('pruned', 93.5, 2500.0, 1.0, top5=99.0, peak_bytes=None),
          _row('int8', 94.0, 800.0, 0.5, top5=None, peak_bytes=None)]
  paths = evaluation.write_report(rows, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['pareto.png', 'report.json', 'report.md']

  saved = json.loads((tmp_path / 'report.json').read_text())
  assert [r['name'] for r in saved] == ['teacher', 'pruned', 'int8']
  assert [r['speedup'] for r in saved] == pytest.approx([1.0, 2.5, 0.8])
  assert [r['size_ratio'] for r in saved] == pytest.approx([1.0, 4.0, 8.0])
  assert saved[1]['top1'] == 93.5 and saved[2]['top5'] is None

  md = (tmp_path / 'report.md').read_text()
  table = [l for l in md.splitlines() if l.startswith('|')]
  assert len(table) == 2 + 3
  header = table[0]
  for unit in ('top-1 (%)', 'top-5 (%)', 'size (MiB)', 'MFLOPs/img',
               'img/s (batch 64)', 'speedup (×)'):
    assert unit in header
  assert 'peak memory' not in header  # nobody reported it ...
  assert 'Peak memory: not reported' in md  # ... and the notes say so
  assert table[2].startswith('| teacher | 95.00 | 99.50 | 1,000 | 4.00 | 1.00 | 2.50 |')
  assert '| int8 | 94.00 | n/a |' in table[4]

  image = matplotlib.image.imread(paths['png'])
  assert image.shape[:2] == (660, 1540)  # 14 x 6 inches at 110 dpi
  assert image[..., :3].std() > 0.05  # something is drawn


def test_rows_missing_a_measurement_are_refused():
  with pytest.raises(ValueError, match=r"'pruned'.*\['img_per_s'\]"):
    report.format_table([_row('a', 90.0, 10.0, 1.0),
                         dict(_row('pruned', 80.0, 10.0, 1.0), img_per_s=None)])
  with pytest.raises(ValueError, match='distinct names'):
    report.format_table([_row('a', 90.0, 10.0, 1.0), _row('a', 80.0, 10.0, 1.0)])


def test_pareto_front():
  # (x, accuracy): B is dominated by A (slower and less accurate); D by C.
  xs, ys = [10.0, 5.0, 20.0, 20.0], [90.0, 80.0, 85.0, 84.0]
  assert pareto.frontier(xs, ys, larger_x_better=True) == [0, 2]
  # As sizes (smaller is better): A (10, 90) is the largest but the best.
  assert pareto.frontier(xs, ys, larger_x_better=False) == [1, 0]


def test_report_of_measured_variants(tmp_path, capsys):
  from vit_compress.compress import quantize  # pylint: disable=g-import-not-at-top
  config = zoo.get('Nano_2')
  params = jax.jit(lambda r: models.init(config, r))(jax.random.key(0))
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), (32, 10))
  rng = np.random.default_rng(0)
  batches = [{'image': rng.normal(size=(50, 8, 8, 3)).astype(np.float32),
              'label': rng.integers(0, 10, 50).astype(np.int32)} for _ in range(2)]
  qparams, qconfig = quantize.quantize(params, config, {'mode': 'ptq'})
  checkpoint.save_model(str(tmp_path / 'float'), params, config)
  quantize.save_quantized(str(tmp_path / 'int8'), qparams, qconfig)
  variants = [('float', models.build(config), params, tmp_path / 'float'),
              ('int8 weights', quantize.quantized_model(qconfig), qparams, tmp_path / 'int8')]
  rows = []
  for name, module, p, artifact in variants:
    row = {'name': name, **evaluation.accuracy(module, p, batches)}
    row.update(evaluation.profile(module, p, batches, artifact=str(artifact),
                                batch_sizes=(1, 32), repeats=2, min_run_s=0.005))
    rows.append(row)
  evaluation.write_report(rows, str(tmp_path / 'report'))
  saved = json.loads((tmp_path / 'report' / 'report.json').read_text())
  for measured, written in zip(rows, saved):
    assert {k: written[k] for k in measured} == measured
  assert saved[0]['bytes'] == evaluation.artifact_bytes(str(tmp_path / 'float'))
  assert saved[1]['size_ratio'] == pytest.approx(saved[0]['bytes'] / saved[1]['bytes'])
  assert saved[1]['size_ratio'] > 1.5  # int8 kernels on disk
  assert saved[0]['params'] == saved[1]['params'] == 26_794
  # Weight-only int8 barely moves the predictions of this model.
  assert abs(saved[0]['top1'] - saved[1]['top1']) <= 5.0
  evaluation.print_table(rows)
  assert capsys.readouterr().out.strip() == report.format_table(rows)
