r"""int8 TFLite error across training seeds: the digits int8 test's tolerance.

    python bench/int8_digits_spread.py --data_dir=/tmp/tfds --seeds=0,1,2,3,4,5

Trains tests/test_export_digits.py's model (Mini_4 on digits at 8 px, 300
steps) once per seed and, for TFLite full-integer int8 (per-tensor and
per-channel weights) and dynamic-range int8, prints the top-1 drop against
JAX on the 355 test images, how many test images are predicted differently
from the float model, and the relative logit error.
"""
import json
import os
import tempfile

from absl import app
from absl import flags
import jax
import numpy as np

from configs import augreg
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import export
from vit_compress import models
from vit_compress import tflite
from vit_compress import train

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir (digits prepares itself).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds.')
_OUT = flags.DEFINE_string('out_dir', None, 'Where runs go (default: a temp dir).')
_PP = 'decode|to_rgb|value_range(-1, 1)|onehot'
_FORMS = {'full per-tensor': dict(int8=True, per_channel=False),
          'full per-channel': dict(int8=True, per_channel=True),
          'dynamic': dict(int8=True, int8_mode='dynamic')}


def _config(seed):
  config = augreg.get_config('Mini_4,digits')   # as tests/helpers/train_helpers.digits_config
  config.data_dir = _DATA_DIR.value
  config.model.image_size = 8
  config.pp_train = config.pp_eval = _PP
  config.total_steps = config.checkpoint_every = 300
  config.eval_every = 10_000
  config.schedule.base_lr, config.schedule.warmup_steps = 0.002, 30
  config.seed = seed
  return config


def main(argv):
  del argv
  out = _OUT.value or tempfile.mkdtemp(prefix='int8_spread_')
  for seed in (int(s) for s in _SEEDS.value):
    workdir = os.path.join(out, f'seed{seed}')
    config = _config(seed)
    train.train_and_evaluate(config, workdir)
    model_config, params = checkpoint.load_model(os.path.join(workdir, 'model'))
    config = train.prepare(config)
    batches = lambda: data.make_eval_iterator(config)
    images = np.concatenate([np.asarray(b['image'])[np.asarray(b['mask']) > 0]
                             for b in batches()])
    reference = np.asarray(jax.jit(models.build(model_config).apply)(
        {'params': params}, images))
    row = {'seed': seed}
    for name, options in _FORMS.items():
      if options.get('int8_mode') != 'dynamic':
        options = dict(options, representative_images=(
            np.asarray(b['image'][:1]) for b, _ in zip(data.make_train_iterator(config),
                                                        range(100))))
      path = os.path.join(workdir, name.replace(' ', '_') + '.tflite')
      export.export_tflite(model_config, params, path, **options)
      check = export.check_tflite(path, model_config, params, batches)
      logits = tflite.predict(tflite.interpreter(path), images)
      row[name] = {
          'top1_drop': round(check['top1_drop'], 2),
          'images_differ': int(np.sum(logits.argmax(-1) != reference.argmax(-1))),
          'logit_error': round(float(np.linalg.norm(logits - reference) /
                                     np.linalg.norm(reference)), 4)}
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
