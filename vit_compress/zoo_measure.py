"""The model-selection table, measured on this device, beside the published numbers.

    python -m vit_compress.zoo --measure [--budget_s=120] [--batch_size=64]
        [--min_img_per_s=N] [--max_mib=M]

Measured columns come from `eval.profile` (the forward compiled once per
batch size, compile time excluded, median of timed runs) on freshly
initialised weights: speed does not depend on their values. Models are
measured cheapest first (by GFLOPs); one that would not finish inside the
time budget (its estimate scales the last model's time by the FLOP ratio) is
skipped and marked, never silently left out.

Published columns (`PUBLISHED`: AugReg ImageNet top-1, checkpoint size and
img/s, at 384 px on the authors' accelerator) are facts from the paper, kept
apart: a "pub" header, never mixed with what was measured here.

`--min_img_per_s` / `--max_mib` answer the guides' question: of the models
that run at least that fast (measured, large batch) and are at most that big
(float32 MiB), which is the most accurate (published top-1)?
"""
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

# AugReg ImageNet results (384 px; MiB of the checkpoint, img/s on one
# accelerator as published) by zoo name: DESIGN.md §5.
PUBLISHED = {
    'L_16': {'top1': 85.59, 'mib': 1243, 'img_per_s': 50},
    'B_16': {'top1': 85.49, 'mib': 391, 'img_per_s': 138},
    'S_16': {'top1': 83.73, 'mib': 115, 'img_per_s': 300},
    'Ti_16': {'top1': 78.22, 'mib': 37, 'img_per_s': 610},
    'R_Ti_16': {'top1': 75.40, 'mib': 40, 'img_per_s': 2426},
    'B_32': {'top1': 83.59, 'mib': 398, 'img_per_s': 955},
}
SKIPPED_BUDGET = 'skipped: over the time budget'
_GFLOPS_FLOOR = 0.01   # below it, fixed costs dominate a model's time


def _forward(config):
  """fn(params, images) -> outputs; a LiT model is timed on its image tower."""
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  return models.families.of(config).image_fn(models.build(config))


def measure(rows: List[Dict], image_size: int, num_classes: int,
            batch_sizes: Sequence[int] = (1, 64), budget_s: float = 120.0,
            repeats: int = 3, min_run_s: float = 0.05, *,
            get_config: Callable[..., Any]) -> List[Dict]:
  """Adds 'img_per_s_b{B}' (or 'skipped') to each `describe` row, in place.

  `get_config(name, image_size, num_classes)` builds a row's model config
  (`zoo.sized`); it is passed in because the zoo's command calls this module.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vit_compress import evaluation  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  last = None   # (gflops, seconds) of the last model measured
  for row in sorted(rows, key=lambda r: r['gflops']):
    spent = time.perf_counter() - start
    # A model costs at least the last one's time (compiling and the timed
    # runs are a fixed cost), more in proportion to its FLOPs.
    estimate = 0.0 if last is None else last[1] * max(
        1.0, (row['gflops'] + _GFLOPS_FLOOR) / (last[0] + _GFLOPS_FLOOR))
    if spent + estimate > budget_s:
      row['skipped'] = SKIPPED_BUDGET
      continue
    began = time.perf_counter()
    config = get_config(row['name'], image_size, num_classes)
    size = config.image_size   # image_size None: the model's own resolution
    try:
      params = models.init(config, jax.random.key(0))
      p = evaluation.profile(_forward(config), params,
                           image_shape=(size, size, 3),
                           batch_sizes=batch_sizes, repeats=repeats,
                           min_run_s=min_run_s)
    except (MemoryError, RuntimeError) as e:   # XlaRuntimeError: out of memory
      row['skipped'] = f'failed: {str(e).splitlines()[0][:60]}'
      continue
    for b in batch_sizes:
      row[f'img_per_s_b{b}'] = p[f'img_per_s_b{b}']
    row['device'] = p['device']
    last = (row['gflops'], time.perf_counter() - began)
  return rows


def select(rows: List[Dict], min_img_per_s: Optional[float] = None,
           max_mib: Optional[float] = None, batch_size: int = 64) -> List[Dict]:
  """The rows that fit, most accurate (published top-1) first.

  Speed is the measured img/s at `batch_size`; a model without a measurement
  cannot be shown to fit and is left out. Models without a published
  accuracy follow, fastest first.
  """
  key = f'img_per_s_b{batch_size}'
  fits = []
  for r in rows:
    if max_mib is not None and r['mib'] > max_mib:
      continue
    if min_img_per_s is not None and r.get(key, 0.0) < min_img_per_s:
      continue
    fits.append(r)
  return sorted(fits, key=lambda r: (-PUBLISHED.get(r['name'], {}).get('top1', -1.0),
                                     -r.get(key, 0.0)))


def format_table(rows: List[Dict], batch_sizes: Sequence[int]) -> str:
  """The describe columns (with each row's resolution, px), the measured
  img/s, then the published columns."""
  measured = ''.join(f' {"img/s b" + str(b):>11}' for b in batch_sizes)
  header = (f'{"model":<13} {"px":>4} {"params":>11} {"GFLOPs":>8} {"MiB":>8}'
            f'{measured} | {"pub top1":>8} {"pub MiB":>7} {"pub img/s":>9}')
  lines = [header, '-' * len(header)]
  for r in rows:
    if 'skipped' in r:
      speed = f' {r["skipped"]:>{12 * len(batch_sizes) - 1}}'
    else:   # '-': not measured (the table without --measure)
      speed = ''.join(f' {r[f"img_per_s_b{b}"]:>11.1f}' if f'img_per_s_b{b}' in r
                      else f' {"-":>11}' for b in batch_sizes)
    pub = PUBLISHED.get(r['name'])
    pub_cols = (f' {pub["top1"]:>8.2f} {pub["mib"]:>7d} {pub["img_per_s"]:>9d}'
                if pub else f' {"-":>8} {"-":>7} {"-":>9}')
    lines.append(f'{r["name"]:<13} {r["image_size"]:>4d} {r["params"]:>11d} '
                 f'{r["gflops"]:>8.2f} {r["mib"]:>8.1f}{speed} |{pub_cols}')
  return '\n'.join(lines)


def machine(device: str) -> str:
  """The device, and for a CPU its model name and core count."""
  import os  # pylint: disable=g-import-not-at-top
  if device.lower() != 'cpu':
    return device
  try:
    with open('/proc/cpuinfo') as f:
      name = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    name = 'CPU'
  return f'{name}, {os.cpu_count()} cores'


def legend(image_size: int, device: str, budget_s: float) -> str:
  where = f'{image_size} px' if image_size else "each model's resolution"
  return (f'Measured here at {where} on {machine(device)} (img/s: compile '
          f'excluded, median of timed runs; budget {budget_s:.0f} s). After '
          "'|': published AugReg ImageNet numbers (384 px, top-1 %, checkpoint "
          "MiB, img/s on the authors' accelerator), not measured here.")
