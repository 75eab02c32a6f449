r"""LiT: trains a text tower against a locked (frozen) image tower.

    get_config('LiT_Nano') (default, CPU) or any LiT zoo name.

CPU, on the embedded `digits` data. First train an image classifier, then
tune a text tower to it on captions built from the label names
('a handwritten seven.'), then score zero-shot:

    python -m vit_compress.main --config=configs/augreg.py:Nano_2,digits \
        --workdir=/tmp/digits_nano --config.model.image_size=8 \
        --config.pp_train='decode|to_rgb|value_range(-1, 1)|onehot' \
        --config.pp_eval='decode|to_rgb|value_range(-1, 1)|onehot'
    python -m vit_compress.main --config=configs/lit.py \
        --workdir=/tmp/digits_lit --config.init_from=/tmp/digits_nano/model

The image tower (`img/...`) is initialised from the classifier (its head is
dropped: LiT_Nano embeds images by their pre-logits, as LiT-B16B_2 does) and
frozen by `config.optim.frozen='^img/'`; only `txt/...` and the temperature
train. Accelerator: LiT_B16B_2 with `init_from` an AugReg B/16 checkpoint and
an image-text dataset; LiT-B16B reaches 73.9 % ImageNet zero-shot.
"""
import ml_collections

from vit_compress import config_schema
from vit_compress import zoo

_IMAGE = 'decode|to_rgb|value_range(-1, 1)'


def get_config(arg: str = 'LiT_Nano') -> ml_collections.ConfigDict:
  config = config_schema.defaults()
  config.model = zoo.get(arg)
  config.loss = 'contrastive'
  config.init_into = 'img'          # init_from fills the image tower only
  config.optim.frozen = '^img/'     # locked image tower
  config.optim.name = 'adamw'
  config.optim.weight_decay = 0.0
  config.schedule.base_lr = 0.003
  config.schedule.warmup_steps = 50
  config.dataset = 'digits'
  config.train_split = 'train'
  config.eval_split = 'test'
  # One caption per image, its template drawn per example; the prompts of
  # zero-shot evaluation average over all templates of the set.
  config.lit.templates = 'digits'
  config.pp_train = f"{_IMAGE}|captions('digits')|tokenize|keep('image', 'tokens', 'label')"
  config.pp_eval = f"{_IMAGE}|captions('digits', sample=False)|tokenize|keep('image', 'tokens', 'label')"
  config.batch_size = 64
  config.total_steps = 500
  config.log_every = 50
  config.eval_every = 250
  config.checkpoint_every = 250
  return config
