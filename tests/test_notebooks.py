"""notebooks/: stored without outputs, and each runs top to bottom in a fresh
kernel with SMALL = True (a few steps; the parameters are injected after the
cell tagged `parameters`, as papermill does), from notebooks/ as Jupyter
starts it or from the repository root. The LiT notebook runs with enough
steps to be the suite's LiT training test (zero-shot > 50 %, tower locked)."""
import glob
import json
import os
import re

import jax
import nbformat
from nbclient import NotebookClient
import numpy as np
import pytest

from vit_compress import checkpoint

pytestmark = pytest.mark.slow   # integration: see pytest.ini

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, 'notebooks')
PATHS = sorted(glob.glob(os.path.join(NOTEBOOKS, '*.ipynb')))


@pytest.mark.parametrize('path', PATHS, ids=os.path.basename)
def test_notebook_is_stored_clean(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  first = nb.cells[0]
  assert first.cell_type == 'markdown' and first.source.startswith('# ')
  assert '# !pip install' in first.source
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert 'parameters' in code[0].metadata.get('tags', [])
  assert 'SMALL = False' in code[0].source
  for cell in code:
    where = f'{os.path.basename(path)}: {cell.source[:50]!r}'
    assert cell.outputs == [] and cell.execution_count is None, where


def test_every_notebook_is_executed_below():
  assert sorted(map(os.path.basename, PATHS)) == [
      'lit_zero_shot.ipynb', 'model_zoo.ipynb', 'quickstart.ipynb']


def _execute(name, cwd, **parameters):
  """The executed notebook, with SMALL = True and `parameters` injected."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  at = next(i for i, c in enumerate(nb.cells)
            if 'parameters' in c.metadata.get('tags', []))
  source = '\n'.join(f'{k} = {v!r}' for k, v in {'SMALL': True, **parameters}.items())
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
      source, metadata={'tags': ['injected-parameters']}))
  # The kernel inherits this environment (conftest's JAX compilation cache)
  # but not pytest's sys.path: the notebook finds configs/ itself.
  NotebookClient(nb, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': cwd}}).execute()
  return nb


def _stdout(nb) -> str:
  return ''.join(o.text for c in nb.cells if c.cell_type == 'code'
                 for o in c.outputs
                 if o.output_type == 'stream' and o.name == 'stdout')


def _displayed(nb, mime: str) -> int:
  return sum(mime in o.get('data', {}) for c in nb.cells if c.cell_type == 'code'
             for o in c.outputs)


def test_quickstart_runs_the_recipe_and_shows_the_report(digits_data_dir, tmp_path):
  workdir = tmp_path / 'quickstart'
  nb = _execute('quickstart.ipynb', NOTEBOOKS, WORKDIR=str(workdir),
                DATA_DIR=digits_data_dir)
  with open(workdir / 'report.json') as f:
    rows = {r['name']: r for r in json.load(f)}
  assert list(rows) == ['teacher', 'teacher + ToMe r=2', 'student (masked)',
                        'student shrunk', 'student shrunk int8']
  assert all(r['top1'] > 10 and r['count'] == 355 for r in rows.values())  # chance: 10 %
  assert rows['student shrunk int8']['bytes'] < rows['teacher']['bytes']
  assert rows['student shrunk']['params'] < rows['teacher']['params']
  assert not (workdir / 'export').exists()   # SMALL leaves the export out
  out = _stdout(nb)
  int8 = rows['student shrunk int8']
  assert f'int8 student: {int8["top1"]:.2f} % top-1' in out
  assert _displayed(nb, 'text/markdown') == 1   # the report table
  assert _displayed(nb, 'image/png') == 1       # pareto.png


def test_model_zoo_shows_published_counts_and_measured_speed():
  nb = _execute('model_zoo.ipynb', NOTEBOOKS)
  out = _stdout(nb)
  # vit_jax's parameter counts at 224 px, 1000 classes (README's table).
  assert re.search(r'^Ti_16 +5717416 +197 +2\.54 +21\.8$', out, re.M), out
  assert re.search(r'^S_16 +22050664 +197 +9\.26 +84\.1$', out, re.M), out
  assert 'Ti_16 at 384 px: 5,790,376 params, 577 tokens' in out
  # zoo_measure's table: px, params, GFLOPs, MiB, measured img/s at batch 1
  # and the large batch, then the published columns ('-': none for tiny models).
  for name in ('Nano_2', 'Micro_2'):
    speed = re.search(rf'^{name} +8 +\d+ +[\d.]+ +[\d.]+ +([\d.]+) +([\d.]+) \|'
                      r' +- +- +-$', out, re.M)
    assert speed, out
    assert float(speed.group(1)) > 0 and float(speed.group(2)) > 0
  assert 'most accurate (published top-1) first:' in out
  assert _displayed(nb, 'image/png') == 1   # params against img/s


def test_lit_notebook_is_far_above_chance_zero_shot(digits_data_dir, tmp_path):
  # More steps than SMALL's: this is also the suite's LiT training test.
  workdir = tmp_path / 'lit'
  nb = _execute('lit_zero_shot.ipynb', REPO, WORKDIR=str(workdir),
                DATA_DIR=digits_data_dir, SMALL=False, IMAGE_STEPS=400,
                LIT_STEPS=150)
  out = _stdout(nb)
  zero_shot = float(re.search(r'zero-shot top-1 ([\d.]+) % .* on 355 test images',
                              out).group(1))
  print(f'LiT notebook: zero-shot top-1 {zero_shot:.2f} %')
  assert zero_shot > 50, out   # chance is 10 %
  # The hand-written loop over the embeddings agrees with eval.zero_shot_accuracy.
  assert f'by hand: top-1 {zero_shot:.2f} % on 355 images' in out
  # LiT's image tower is the classifier's (without its head), kept locked.
  _, image_params = checkpoint.load_model(str(workdir / 'image' / 'model'))
  _, lit_params = checkpoint.load_model(str(workdir / 'lit' / 'model'))
  del image_params['head']
  jax.tree.map(np.testing.assert_array_equal, image_params, lit_params['img'])
  assert _displayed(nb, 'image/png') == 2   # predictions, similarity matrix
