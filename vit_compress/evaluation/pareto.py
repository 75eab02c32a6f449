"""pareto.png: top-1 against measured throughput and against size, one labelled point per variant.

A label is the variant's name, with its runtime when not all rows run in JAX.
Drawn on a bare Agg canvas (no pyplot, no global backend switch), so it
works headless and leaves a notebook's matplotlib settings alone. The dashed
line joins the Pareto-optimal variants of each panel (no other variant is
both more accurate and faster / smaller). Labels are placed next to their
point where they overlap no other label or point.
"""
import io
from typing import Any, Dict, List, Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
import tensorflow as tf

MIB = 2**20
# Label offsets in points (dx, dy, horizontal alignment, vertical alignment),
# tried in order until one overlaps nothing already drawn.
_OFFSETS = [(dx * s, dy * s, ha, va) for s in (1, 2, 3.2)
            for dx, dy, ha, va in ((7, 7, 'left', 'bottom'), (7, -7, 'left', 'top'),
                                   (-7, 7, 'right', 'bottom'), (-7, -7, 'right', 'top'),
                                   (0, 10, 'center', 'bottom'), (0, -10, 'center', 'top'))]

# A translucent white box keeps a label readable over grid and front lines.
_LABEL_BOX = dict(boxstyle='round,pad=0.15', facecolor='white', alpha=0.9,
                  edgecolor='none')


def frontier(xs: Sequence[float], ys: Sequence[float], larger_x_better: bool) -> List[int]:
  """Indices of the Pareto-optimal points (y always higher-is-better), by x."""
  sign = 1 if larger_x_better else -1
  best = []
  for i, (x, y) in enumerate(zip(xs, ys)):
    dominated = any((sign * xs[j] >= sign * x and ys[j] >= y)
                    and (sign * xs[j] > sign * x or ys[j] > y)
                    for j in range(len(xs)) if j != i)
    if not dominated:
      best.append(i)
  return sorted(best, key=lambda i: xs[i])


def _overlaps(box, boxes) -> bool:
  return any(box.overlaps(b) for b in boxes)


def _place_labels(ax, xs, ys, names, colors, renderer):
  points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
  taken = []
  for (px, py) in points:  # keep labels off the markers
    taken.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
  axes_box = ax.get_window_extent(renderer)
  for x, y, name, color in zip(xs, ys, names, colors):
    chosen = None
    for dx, dy, ha, va in _OFFSETS:
      text = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords='offset points',
                         ha=ha, va=va, fontsize=11, color=color, bbox=_LABEL_BOX, zorder=4,
                         arrowprops=(dict(arrowstyle='-', color=color, lw=0.8)
                                     if abs(dx) + abs(dy) > 20 else None))
      box = text.get_window_extent(renderer)
      inside = (box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1
                and box.y0 >= axes_box.y0 and box.y1 <= axes_box.y1)
      if inside and not _overlaps(box, taken):
        chosen = box
        break
      text.remove()
    if chosen is None:  # crowded: the first position, overlaps accepted
      dx, dy, ha, va = _OFFSETS[0]
      text = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords='offset points',
                         ha=ha, va=va, fontsize=11, color=color, bbox=_LABEL_BOX, zorder=4)
      chosen = text.get_window_extent(renderer)
    taken.append(chosen)


def _panel(ax, xs, ys, names, colors, *, xlabel, title, larger_x_better):
  for x, y, color in zip(xs, ys, colors):
    ax.scatter([x], [y], s=70, color=color, edgecolor='black', linewidth=0.6, zorder=3)
  best = frontier(xs, ys, larger_x_better)
  if len(best) > 1:
    ax.plot([xs[i] for i in best], [ys[i] for i in best], '--', color='0.5',
            lw=1.2, zorder=2, label='Pareto front')
    ax.legend(loc='lower left' if larger_x_better else 'lower right', fontsize=10)
  ax.set_xscale('log')
  ax.set_xlabel(xlabel, fontsize=12)
  ax.set_ylabel('top-1 accuracy (%)', fontsize=12)
  ax.set_title(title, fontsize=13)
  ax.grid(True, which='major', alpha=0.45)
  ax.grid(True, which='minor', alpha=0.15)
  ax.tick_params(labelsize=10)
  ax.margins(x=0.3, y=0.18)


def label(row: Dict[str, Any], rows: Sequence[Dict[str, Any]]) -> str:
  """A row's name, with its runtime when the rows do not all run in JAX."""
  if all(r.get('runtime', 'jax') == 'jax' for r in rows):
    return str(row['name'])
  return f'{row["name"]} [{row.get("runtime", "jax")}]'


def plot_pareto(rows: Sequence[Dict[str, Any]], path: str,
                title: Optional[str] = None) -> str:
  """Writes the two-panel plot for report rows (see report.py) to `path`."""
  names = [label(r, rows) for r in rows]   # with the runtime if not all jax
  top1 = [float(r['top1']) for r in rows]
  speed = [float(r['img_per_s']) for r in rows]
  mib = [float(r['bytes']) / MIB for r in rows]
  batches = sorted({r.get('batch_size') for r in rows if r.get('batch_size')})
  batch = f', batch {batches[0]}' if len(batches) == 1 else ''
  devices = sorted({str(r['device']) for r in rows if r.get('device')})
  palette = [f'C{i % 10}' for i in range(len(rows))]

  fig = Figure(figsize=(14, 6), dpi=110, layout='constrained')
  canvas = FigureCanvasAgg(fig)
  left, right = fig.subplots(1, 2)
  _panel(left, speed, top1, names, palette,
         xlabel=f'measured throughput (images/s{batch}, log scale)',
         title='Top-1 vs measured throughput', larger_x_better=True)
  _panel(right, mib, top1, names, palette,
         xlabel='size on disk (MiB, log scale)', title='Top-1 vs size',
         larger_x_better=False)
  suptitle = title or 'Compression report'
  if devices:
    suptitle += f'  (measured on {", ".join(devices)})'
  fig.suptitle(suptitle, fontsize=14)
  canvas.draw()  # layout first, so label boxes are measured where they land
  renderer = canvas.get_renderer()
  _place_labels(left, speed, top1, names, palette, renderer)
  _place_labels(right, mib, top1, names, palette, renderer)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(buffer.getvalue())
  return path
