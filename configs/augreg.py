r"""Fine-tunes a zoo model from its AugReg ImageNet-21k checkpoint (vit_jax recipe).

    get_config('Ti_16') ... get_config('R50_B_16'): any zoo name (also 'ViT-B_16'),
    or an AugReg file name as vit_jax takes it:
    get_config('R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0').

Accelerator (one GPU/TPU host; the checkpoint is read straight from GCS):

    python -m vit_compress.main --config=configs/augreg.py:B_16 \
        --workdir=/tmp/b16_cifar10 --config.dataset=cifar10 \
        --config.init_from=gs://vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz

  vit_jax reaches 98.6 % on cifar10 with B/16 after 500 steps at 384 px
  (99.0 % after 10k); prepare cifar10 first (`tfds build cifar10`, needs a
  network once).

CPU, on the embedded `digits` data (8x8 images upsampled to 16 px; about two
minutes on 2 cores, reaching about 97 % test accuracy):

    python -m vit_compress.main --config=configs/augreg.py:Mini_4 \
        --workdir=/tmp/digits_mini --config.dataset=digits \
        --config.model.image_size=16 --config.total_steps=600 \
        --config.batch_size=64 --config.schedule.warmup_steps=50 \
        --config.schedule.base_lr=0.001 --config.optim.name=adamw \
        --config.pp_train='decode|resize(16)|to_rgb|value_range(-1, 1)|onehot' \
        --config.pp_eval='decode|resize(16)|to_rgb|value_range(-1, 1)|onehot'

`get_config('Mini_4,digits')` sets exactly those overrides.
`get_config('MobileViT_XXS,digits')` is the same setup at 32 px (the model
downsamples 32x); see README.md for the accuracy it reaches.
"""
import ml_collections

from vit_compress import augreg
from vit_compress import config_files
from vit_compress import config_schema
from vit_compress import zoo

common = config_files.load_common(__file__)


def _pp(size: int, train: bool, crop: bool = True) -> str:
  if not crop:  # tiny images: no cropping, just the size
    return f'decode|resize({size})|to_rgb|value_range(-1, 1)|onehot'
  if train:
    return (f'decode|inception_crop({size})|flip_lr|to_rgb|'
            'value_range(-1, 1)|onehot')
  return (f'decode|resize_small({size * 8 // 7})|central_crop({size})|to_rgb|'
          'value_range(-1, 1)|onehot')


def get_config(arg: str = 'B_16') -> ml_collections.ConfigDict:
  """`arg` is a zoo name or an AugReg file name, optionally followed by ',digits'.

  A file name (`R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0`,
  as vit_jax's augreg config takes it) picks the model from its part before
  the first '-' and starts from that file under gs://vit_models/augreg/.
  """
  name, variant = common.parse_arg(arg, __file__)
  config = config_schema.defaults()
  if '-' in name and zoo.canonical_name(name) not in zoo.names():
    key = augreg.model_of(name)
    config.model = zoo.get(key)
    config.init_from = augreg.path(name)
  else:
    config.model = zoo.get(name)
    key = zoo.canonical_name(name)
    if key in augreg.UPSTREAM:
      config.init_from = augreg.path(augreg.UPSTREAM[key])

  # vit_jax fine-tuning: SGD momentum 0.9, lr 0.03, cosine, 500 warm-up
  # steps, batch 512, global-norm clip 1.0, no weight decay, 384 px.
  config.dataset = 'imagenet2012'
  config.train_split = 'train[:99%]'
  config.eval_split = 'validation'
  # 384 px, or the nearest size the patch grid tiles (H/14: 392 = 28 x 14).
  res = 384
  patch = config.model.patches.size[0] if 'patches' in config.model else 16
  res = round(res / patch) * patch
  if 'patches' not in config.model:  # MobileViT: its own (timm's) 256 px
    res = config.model.image_size
  config.model.image_size = res
  config.pp_train = _pp(res, train=True)
  config.pp_eval = _pp(res, train=False)
  config.batch_size = 512
  config.eval_batch_size = 512
  config.total_steps = 20_000
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.grad_clip_norm = 1.0
  config.optim.weight_decay = 0.0
  config.schedule.base_lr = 0.03
  config.schedule.warmup_steps = 500
  config.schedule.decay_type = 'cosine'
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000

  if variant == 'digits':
    # From scratch on 8x8 digits upsampled to 16 px: Adam suits a model that
    # starts from random weights; no checkpoint download.
    # MobileViT downsamples 32x: 32 px leaves a 1x1 map at its last stage.
    size = 16 if 'patches' in config.model else 32
    common.digits(config, image_size=size,
                  pp_train=_pp(size, train=True, crop=False))
    config.eval_split = 'test'
    config.eval_batch_size = 128
    config.total_steps = 600
    config.optim.name = 'adamw'
    config.schedule.base_lr = 0.001
    config.schedule.warmup_steps = 50
    config.log_every = 50
    config.eval_every = 200
    config.checkpoint_every = 200
  return config
