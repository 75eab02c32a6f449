"""The zoo matches DESIGN.md §5 exactly, and its CLI prints it."""
import os
import subprocess
import sys

import pytest

from vit_compress import zoo
from vit_compress.registry import UnknownNameError

# DESIGN.md §5: parameters at 224 px, 1000 classes, token classifier.
PUBLISHED_PARAMS = {
    'Ti_16': 5_717_416, 'S_16': 22_050_664, 'S_32': 22_878_952,
    'B_16': 86_567_656, 'B_32': 88_224_232, 'B_8': 86_576_872,
    'L_16': 304_326_632, 'L_32': 306_535_400, 'H_14': 632_045_800,
    'R_Ti_16': 6_337_704, 'R26_S_32': 36_431_912, 'R26_B_32': 101_383_976,
    'R50_B_16': 98_659_112, 'R50_L_32': 328_994_856,
    'Mixer_B_16': 59_880_472, 'Mixer_B_32': 60_293_428,
    'Mixer_L_16': 208_196_168,
    'LiT_B16B_2': 195_280_897, 'LiT_L16L': 638_443_521,
    # timm 1.0's mobilevit_xxs/xs/s (DESIGN.md §5, at their 256 px).
    'MobileViT_XXS': 1_272_024, 'MobileViT_XS': 2_317_848,
    'MobileViT_S': 5_578_632,
}


@pytest.mark.slow
def test_cli_table_has_exact_published_parameter_counts():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-m', 'vit_compress.zoo'], env=env,
                       capture_output=True, text=True, check=True, timeout=300).stdout
  rows = {line.split()[0]: line.split() for line in out.splitlines()
          if line.split() and line.split()[0] in zoo.PUBLISHED}
  assert sorted(rows) == sorted(zoo.PUBLISHED)
  for name, params in PUBLISHED_PARAMS.items():
    assert int(rows[name][1]) == params, name
  # Tokens: 14x14+1 at patch 16; the R+ViT-Ti stem downsamples 4x, patch 8 -> 7x7+1.
  assert int(rows['Ti_16'][2]) == 197
  assert int(rows['R_Ti_16'][2]) == 50
  assert int(rows['H_14'][2]) == 257
  assert int(rows['Mixer_B_32'][2]) == 49
  # MobileViT at 256 px: the first transformer sees a 32x32 map in 2x2 patches.
  assert int(rows['MobileViT_XXS'][2]) == 256
  # GFLOPs from XLA: B/16 costs ~4x B/32 (4x the tokens), more than S/16.
  gflops = {n: float(r[3]) for n, r in rows.items()}
  assert 3.5 < gflops['B_16'] / gflops['B_32'] < 4.5
  assert gflops['S_16'] < gflops['B_16'] < gflops['L_16'] < gflops['H_14']
  assert gflops['MobileViT_XXS'] < gflops['MobileViT_XS'] < gflops['MobileViT_S']
  assert gflops['MobileViT_XXS'] < gflops['Ti_16'] / 2
  # float32 MiB = 4 bytes per parameter.
  assert float(rows['B_16'][4]) == pytest.approx(86_567_656 * 4 / 2**20, abs=0.06)


def test_image_size_and_classes_flags_change_the_counts():
  row = zoo.describe('Ti_16', image_size=384, num_classes=10)
  # 24x24+1 tokens; head 192*10+10 instead of 192*1000+1000; posemb grows.
  assert row['tokens'] == 577
  expected = 5_717_416 - 193_000 + 1_930 + (577 - 197) * 192
  assert row['params'] == expected


@pytest.mark.parametrize('alias,name', [
    ('ViT-B_16', 'B_16'), ('R50+ViT-B_16', 'R50_B_16'), ('R+ViT-Ti_16', 'R_Ti_16'),
    ('R26+ViT-S_32', 'R26_S_32'), ('Mixer-B_16', 'Mixer_B_16'),
    ('LiT-B16B_2', 'LiT_B16B_2'), ('Ti_16', 'Ti_16')])
def test_vit_jax_spellings(alias, name):
  assert zoo.get(alias).name == name


def test_unknown_model_lists_known_names_and_suggests():
  with pytest.raises(UnknownNameError) as e:
    zoo.get('B_61')
  assert "Did you mean 'B_16'" in str(e.value)
  assert 'Ti_16' in str(e.value)


def test_unknown_override_key_is_named():
  with pytest.raises(UnknownNameError, match='num_clases'):
    zoo.get('Ti_16', num_clases=10)
