r"""Token merging (ToMe) on a trained ViT: test accuracy against measured speed.

    python bench/tome_accuracy.py           # Micro_2 on digits at 16 px: 64 patches
    python bench/tome_accuracy.py --config=configs/augreg.py:Mini_4,digits \
        --image_size=32 --workdir=/tmp/bench_tome_mini   # patch 4 at 32 px: 64 too

bench/tome_speed.py times random weights; this trains the model first, with
the trainer (`train.train_and_evaluate`, configs/augreg.py's `digits`
setup, 8x8 digits upsampled to `image_size` so every patch is one original
pixel), or reuses `{workdir}/model` when a previous run left it. Then, for
each r (tokens merged per layer, no retraining), `eval.score_variant` gives
the test top-1 over all 355 test images and `eval.profile`'s measurements:
XLA FLOPs per image and img/s at batch 1 and 256 (compiled, warmed up, median
of 5 timed runs of at least `min_run_s` each). The profile is repeated in
`rounds` rounds over all r and the median per r is shown, so a shared
machine's load biases no r in particular.
"""
import os
import statistics

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

import machine
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import evaluation
from vit_compress import models
from vit_compress import train
from vit_compress.models import tome
from vit_compress.models import vit

_AUGREG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs',
                       'augreg.py')
config_flags.DEFINE_config_file('config', f'{_AUGREG}:Micro_2,digits',
                                'Training config (a digits setup).')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/bench_tome_digits',
                               'Training workdir; its model/ is reused if present.')
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'TFDS data_dir (default: workdir/tfds).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 16, 'Digits are resized to this.')
_R = flags.DEFINE_list('r', ['0', '2', '4', '8', '12', '16', '24', '32'],
                       'Tokens merged per layer.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '256'], 'Batch sizes timed.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Profile rounds over all r (median).')
_MIN_RUN_S = flags.DEFINE_float('min_run_s', 0.2, "eval.profile's shortest timed run.")


def train_config():
  config = flags.FLAGS.config
  config.data_dir = _DATA_DIR.value or os.path.join(_WORKDIR.value, 'tfds')
  size = _IMAGE_SIZE.value
  config.model.image_size = size
  config.pp_train = config.pp_eval = (
      f'decode|resize({size})|to_rgb|value_range(-1, 1)|onehot')
  return train.prepare(config)


def main(argv):
  del argv
  # The profile compiles each r again every round: XLA's cache makes that cheap.
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(_WORKDIR.value, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  print(machine.describe())
  print(f'start: {machine.load()}')
  config = train_config()
  data.get_dataset_info(config.dataset, config.data_dir)  # builds digits offline
  model_dir = os.path.join(_WORKDIR.value, 'model')
  if not checkpoint.is_saved_model(model_dir):
    metrics = train.train_and_evaluate(config, _WORKDIR.value)
    print(f'trained {config.total_steps} steps: '
          f"test top-1 {100 * metrics['accuracy']:.2f} %")
  model_config, params = checkpoint.load_model(model_dir)
  config.model = model_config
  batches = lambda: data.make_eval_iterator(config)

  rs = [int(r) for r in _R.value]
  layers = model_config.transformer.num_layers
  grid = (model_config.image_size // model_config.patches.size[0]) ** 2
  modules = {}
  for r in rs:
    c = model_config.copy_and_resolve_references()
    c.tome_r = r
    modules[r] = models.build(c)
  batch_sizes = tuple(int(b) for b in _BATCHES.value)
  timing = dict(batch_sizes=batch_sizes, min_run_s=_MIN_RUN_S.value)
  rows = {r: evaluation.score_variant(f'r={r}', modules[r], params, batches, **timing)
          for r in rs}
  speeds = {r: [[row[f'img_per_s_b{b}'] for b in batch_sizes]] for r, row in rows.items()}
  for _ in range(_ROUNDS.value - 1):
    for r in rs:
      cost = evaluation.profile(modules[r], params, batches(), **timing)
      speeds[r].append([cost[f'img_per_s_b{b}'] for b in batch_sizes])
  median = {r: [statistics.median(s[i] for s in speeds[r])
                for i in range(len(batch_sizes))] for r in rs}

  print(f'end: {machine.load()}\n')
  print(f'{model_config.name} (width {model_config.hidden_size}, {layers} layers) at '
        f'{model_config.image_size} px: {grid} patches + class token; trained in '
        f'{_WORKDIR.value}; top-1 on the {rows[rs[0]]["count"]} digits test images; '
        f'img/s median of {_ROUNDS.value} rounds\n')
  head = ' | '.join(f'img/s b{b} | speed-up b{b}' for b in batch_sizes)
  print(f'| r | tokens after last block | MFLOPs/img | top-1 % | {head} |')
  print('|---|---|---|---|' + '---|---|' * len(batch_sizes))
  for r in rs:
    tokens = tome.merged_token_counts(grid + 1, 1, vit.per_layer(r, layers, 'tome_r'))
    cells = ' | '.join(f'{m:.0f} | {m / base:.2f}x'
                       for m, base in zip(median[r], median[rs[0]]))
    print(f"| {r} | {tokens[-1]} | {rows[r]['flops'] / 1e6:.1f} | "
          f"{rows[r]['top1']:.2f} | {cells} |")


if __name__ == '__main__':
  app.run(main)
