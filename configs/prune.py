r"""Structured pruning during fine-tuning, then a physical shrink.

    get_config('S_16') (accelerator) or get_config('Micro_2,digits') (CPU).

Heads and MLP neurons are ranked by magnitude (or first-order Taylor,
`--config.prune.criterion=taylor`) and removed gradually (cubic schedule)
while the model keeps training, optionally distilling from a teacher
(`--config.loss=kd --config.teacher.checkpoint=...`). Masks live in the train
state, so pruned weights stay exactly zero and a resumed run continues the
schedule. At the end the trained model (workdir/model) is masked; shrink it
into a smaller dense model that reloads from its own config:

    python -m vit_compress.compress.shrink --model=WORKDIR/model --out=WORKDIR/shrunk

Accelerator, S/16 from its AugReg ImageNet checkpoint, half of the heads and
neurons removed over 20k steps with a B/16 teacher:

    python -m vit_compress.main --config=configs/prune.py:S_16 --workdir=/tmp/prune_s16

  Aim: NViT-style structured pruning keeps accuracy within ~1 point at a
  measured ~1.9x speed-up (NViT from DeiT-B: 83.29 % at 1.86x).

CPU, on digits, from a trained Micro_2 (see configs/augreg.py):

    python -m vit_compress.main --config=configs/prune.py:Micro_2,digits \
        --workdir=/tmp/digits_pruned --config.init_from=/tmp/digits_micro/model
"""
import ml_collections

from vit_compress import config_files
from vit_compress import config_schema
from vit_compress import zoo

common = config_files.load_common(__file__)


def get_config(arg: str = 'S_16') -> ml_collections.ConfigDict:
  name, variant = common.parse_arg(arg, __file__)
  config = config_schema.defaults()
  config.model = zoo.get(name)
  config.prune.method = 'heads_and_neurons'
  config.prune.criterion = 'magnitude'
  config.prune.sparsity = 0.5
  config.prune.schedule = 'gradual'
  config.prune.frequency = 10
  config.optim.name = 'adamw'

  if variant == 'digits':
    common.digits(config)
    config.total_steps = 300
    config.prune.begin_step = 0
    config.prune.end_step = 200    # 100 steps of recovery at the final sparsity
    config.schedule.base_lr = 0.001
    config.schedule.warmup_steps = 10
    config.log_every = 50
    config.eval_every = 300
    config.checkpoint_every = 300
    return config

  config.init_from = common.S16_IMAGENET2012
  config.loss = 'kd'
  config.teacher.model = 'B_16'
  config.teacher.checkpoint = common.B16_IMAGENET2012
  config.dataset = 'imagenet2012'
  config.train_split = 'train[:99%]'
  config.eval_split = 'validation'
  config.model.image_size = 384
  config.pp_train = ('decode|inception_crop(384)|flip_lr|to_rgb|value_range(-1, 1)|'
                     'onehot')
  config.pp_eval = ('decode|resize_small(438)|central_crop(384)|to_rgb|'
                    'value_range(-1, 1)|onehot')
  config.batch_size = 512
  config.total_steps = 30_000
  config.prune.begin_step = 1_000
  config.prune.end_step = 20_000
  config.prune.frequency = 500
  config.schedule.base_lr = 1e-4
  config.schedule.warmup_steps = 1_000
  config.log_every = 100
  config.eval_every = 2_000
  config.checkpoint_every = 2_000
  return config
