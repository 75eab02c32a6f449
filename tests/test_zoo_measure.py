"""`python -m vit_compress.zoo --measure`: measured img/s, a time budget, the filters."""
import subprocess
import sys

import pytest

from tests.helpers.train_helpers import REPO, subprocess_env
from vit_compress import zoo
from vit_compress import zoo_measure

pytestmark = pytest.mark.slow   # integration: see pytest.ini

TINY = ['Nano_2', 'Micro_2']


def _rows():
  return zoo.describe_many(TINY, image_size=8, num_classes=10, jobs=1)


def test_measure_times_each_model_and_the_filters_keep_what_fits():
  rows = zoo_measure.measure(_rows(), 8, 10, batch_sizes=(1, 8), budget_s=120,
                             get_config=zoo.sized,
                             repeats=2, min_run_s=0.02)
  by_name = {r['name']: r for r in rows}
  for r in rows:
    assert 'skipped' not in r and r['img_per_s_b1'] > 0 and r['img_per_s_b8'] > 0
  fast, slow = sorted(rows, key=lambda r: -r['img_per_s_b8'])
  # A speed floor between the two keeps only the faster; a size cap between
  # the two sizes keeps only the smaller.
  floor = (fast['img_per_s_b8'] + slow['img_per_s_b8']) / 2
  assert [r['name'] for r in zoo_measure.select(rows, min_img_per_s=floor,
                                                batch_size=8)] == [fast['name']]
  cap = (by_name['Nano_2']['mib'] + by_name['Micro_2']['mib']) / 2
  assert [r['name'] for r in zoo_measure.select(rows, max_mib=cap, batch_size=8)
          ] == ['Nano_2']
  table = zoo_measure.format_table(rows, (1, 8))
  assert f'{by_name["Nano_2"]["img_per_s_b8"]:.1f}' in table
  assert 'pub top1' in table.splitlines()[0].split('|')[1]


def test_budget_skips_and_marks_what_does_not_fit():
  rows = zoo_measure.measure(_rows(), 8, 10, batch_sizes=(1, 8), budget_s=0,
                             get_config=zoo.sized)
  assert [r['skipped'] for r in rows] == [zoo_measure.SKIPPED_BUDGET] * 2
  assert zoo_measure.SKIPPED_BUDGET in zoo_measure.format_table(rows, (1, 8))
  # Unmeasured models cannot be shown to be fast enough.
  assert zoo_measure.select(rows, min_img_per_s=1, batch_size=8) == []


def test_most_accurate_first_by_the_published_top1():
  rows = zoo.describe_many(['R_Ti_16', 'B_16', 'Ti_16'], jobs=1)
  picked = zoo_measure.select(rows, max_mib=100)
  # B/16 (330 MiB) is over the cap; Ti/16 (78.22 %) before R+Ti/16 (75.40 %).
  assert [r['name'] for r in picked] == ['Ti_16', 'R_Ti_16']
  line = next(l for l in zoo_measure.format_table(picked, (1, 64)).splitlines()
              if l.startswith('Ti_16'))
  assert line.split('|')[1].split() == ['78.22', '37', '610']


def test_cli_measures_and_filters():
  out = subprocess.run(
      [sys.executable, '-m', 'vit_compress.zoo', '--models=Nano_2',
       '--image_size=8', '--num_classes=10', '--batch_size=8', '--jobs=1',
       '--min_img_per_s=1', '--budget_s=60'],
      env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
      timeout=240, check=True).stdout
  assert 'Measured here at 8 px on' in out
  assert '1 of 1 models fit (>= 1.0 img/s at batch 8' in out
  row = next(l for l in out.splitlines() if l.startswith('Nano_2'))
  assert float(row.split('|')[0].split()[-1]) >= 1.0   # img/s at batch 8


def test_mobilevit_is_measured_at_its_own_resolution():
  rows = zoo.describe_many(['MobileViT_XXS'], num_classes=10, jobs=1)
  params = 1_272_024 - 321_000 + 3_210  # timm's count with a 10-class head
  assert rows[0]['image_size'] == 256 and rows[0]['params'] == params
  zoo_measure.measure(rows, None, 10, batch_sizes=(1,), budget_s=120, repeats=1,
                      get_config=zoo.sized,
                      min_run_s=0.01)
  assert 'skipped' not in rows[0] and rows[0]['img_per_s_b1'] > 0
  line = zoo_measure.format_table(rows, (1,)).splitlines()[2]
  assert line.split()[:3] == ['MobileViT_XXS', '256', str(params)]
