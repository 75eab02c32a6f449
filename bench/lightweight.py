r"""A designed-light model against a compressed ViT, on digits, same budget.

    PYTHONPATH=$PWD python bench/lightweight.py [--steps=150] [--seeds=0,1]

Trains MobileViT_XXS and a ViT of Ti width (Ti_16's 192 wide, 12 layers, 3
heads, MLP 768; patch 8, so 17 tokens at 32 px) from scratch with
configs/augreg.py's digits recipe at 32 px (Adam, batch 64, the same steps;
base lr 0.003 for MobileViT, 0.001 for the ViT, see BASE_LR), then quantizes each with PTQ int8 (compress.quantize: weights int8;
MobileViT's convolutions W8A8 with `conv_dtype='int8'`, the ViT's patch
embedding and both heads float) and measures every form with eval.profile:
top-1 on the 355 test images, parameters, bytes on disk (save_model /
save_quantized directories), XLA FLOPs per image and img/s at batch 1 and 256.
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import augreg  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_compress import checkpoint, data, evaluation, models, train  # pylint: disable=wrong-import-position
from vit_compress.compress import quantize  # pylint: disable=wrong-import-position
from vit_compress.evaluation import classification  # pylint: disable=wrong-import-position

PP = 'decode|resize(32)|to_rgb|value_range(-1, 1)|onehot'
# Adam's base lr per model: the ViT diverges at MobileViT's 0.003 (21 % top-1
# after 150 steps, measured); 0.001 is configs/augreg.py's digits default.
BASE_LR = {'MobileViT_XXS': 0.003, 'Ti_16': 0.001}


def experiment(name: str, steps: int, seed: int, data_dir):
  config = augreg.get_config(f'{name},digits')
  if name == 'Ti_16':
    config.model.patches.size = (8, 8)
  config.model.image_size = 32
  config.pp_train = config.pp_eval = PP
  config.total_steps = steps
  config.checkpoint_every = steps
  config.eval_every = 10 * steps  # only at the end
  config.log_every = steps
  config.schedule.base_lr = BASE_LR[name]
  config.schedule.warmup_steps = 20
  config.seed = seed
  if data_dir:
    config.data_dir = data_dir
  return config


def measure(config, workdir):
  train.train_and_evaluate(config, workdir)
  config = train.prepare(config)
  model_config, params = checkpoint.load_model(os.path.join(workdir, 'model'))
  qc = {'weight_dtype': 'int8',
        'conv_dtype': 'int8' if model_config.family == 'mobilevit' else None}
  qparams, qconfig = quantize.quantize(params, model_config, qc)
  qdir = os.path.join(workdir, 'int8')
  quantize.save_quantized(qdir, qparams, qconfig)
  rows = {}
  for form, module, p, artifact in (
      ('float32', models.build(model_config), params, os.path.join(workdir, 'model')),
      ('int8', quantize.quantized_model(qconfig), qparams, qdir)):
    top1 = classification.accuracy(module, p, data.make_eval_iterator(config),
                                   top_k=(1,))['top1']
    prof = evaluation.profile(module, p, image_shape=(32, 32, 3), artifact=artifact,
                            batch_sizes=(1, 256))
    rows[form] = dict(top1=top1, params=prof['params'], bytes=prof['bytes'],
                      flops=prof['flops'], b1=prof['img_per_s_b1'],
                      b256=prof['img_per_s_b256'])
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=150)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--data_dir', default=None, help='TFDS data_dir for digits.')
  parser.add_argument('--models', default=','.join(BASE_LR))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  print(machine.describe())
  print(machine.load(), '(before)')
  results = {}
  with tempfile.TemporaryDirectory() as d:
    for name in args.models.split(','):
      for seed in seeds:
        rows = measure(experiment(name, args.steps, seed, args.data_dir),
                       os.path.join(d, f'{name}_{seed}'))
        for form, row in rows.items():
          results.setdefault((name, form), []).append(row)
  print(machine.load(), '(after)')
  span = lambda xs, f: (f(min(xs)) if min(xs) == max(xs)
                        else f'{f(min(xs))}-{f(max(xs))}')
  print(f'\n{args.steps} steps, batch 64, 32 px, seeds {seeds}; ranges over seeds\n')
  print('| model | form | top-1 % | params | bytes on disk | MFLOPs/img | '
        'img/s b1 | img/s b256 |')
  print('|---|---|---|---|---|---|---|---|')
  for (name, form), rows in results.items():
    label = 'ViT Ti width, patch 8' if name == 'Ti_16' else name
    get = lambda k: [r[k] for r in rows]
    print(f'| {label} | {form} | {span(get("top1"), lambda x: f"{x:.1f}")} | '
          f'{rows[0]["params"]:,} | {statistics.median(get("bytes")):,.0f} | '
          f'{rows[0]["flops"] / 1e6:.1f} | {span(get("b1"), lambda x: f"{x:.0f}")} | '
          f'{span(get("b256"), lambda x: f"{x:.0f}")} |')


if __name__ == '__main__':
  main()
