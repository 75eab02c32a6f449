"""What the experiment files share: the `NAME,variant` argument, the digits
CPU setup and the public AugReg files they start from.

A config file (here or a forked copy anywhere) gets this module with

    from vit_compress import config_files
    common = config_files.load_common(__file__)

(the common.py beside it if there is one, else this one; see
vit_compress/config_files.py). Like every config file, it imports only from
vit_compress.
"""
import os
from typing import Sequence, Tuple

import ml_collections

from vit_compress import augreg

# The digits as they are stored (8x8), and the "consistent teaching" views:
# a random 8 px crop of the digit upsampled to 10 px, the central crop for
# evaluation (teacher and student see the same crop).
DIGITS_PP = 'decode|to_rgb|value_range(-1, 1)|onehot'
DIGITS_PP_CROP_TRAIN = ('decode|resize(10)|random_crop(8)|to_rgb|'
                        'value_range(-1, 1)|onehot')
DIGITS_PP_CROP_EVAL = ('decode|resize(10)|central_crop(8)|to_rgb|'
                       'value_range(-1, 1)|onehot')


def _imagenet2012_384(model: str) -> str:
  # The lr-0.03 fine-tune of the recommended upstream file. (augreg.IMAGENET2012,
  # the teacher lookup, names B/16's lr-0.01 fine-tune, the one vit_jax and timm
  # recommend; these configs keep the file they have always named.)
  return augreg.path(f'{augreg.UPSTREAM[model]}--imagenet2012-steps_20k-lr_0.03-'
                     f'res_{augreg.IMAGENET2012_RES}')


# Public AugReg files (gs://vit_models/augreg/) the accelerator configs use.
S16_IMAGENET2012 = _imagenet2012_384('S_16')
B16_IMAGENET2012 = _imagenet2012_384('B_16')


def parse_arg(arg: str, config_file: str,
              variants: Sequence[str] = ('digits',)) -> Tuple[str, str]:
  """'NAME,variant' -> (NAME, variant); variant '' when absent.

  A variant the file does not have is an error naming the file and the
  argument, raised before any config is built.
  """
  name, _, variant = arg.partition(',')
  if variant and variant not in variants:
    where = '/'.join(os.path.abspath(config_file).split(os.sep)[-2:])
    only = ', '.join(f"',{v}'" for v in variants)
    raise ValueError(f"Unknown variant {variant!r} in '{where}:{arg}'; the only "
                     f"one{'s are' if len(variants) > 1 else ' is'} {only}.")
  return name, variant


def digits(config: ml_collections.ConfigDict, *, image_size: int = 8,
           pp_train: str = DIGITS_PP, pp_eval: str = None) -> None:
  """The CPU setup: the embedded digits data (no download), from random
  weights, batch 64; the model at `image_size`. Each config then sets its
  own schedule (steps, lr, warm-up, eval cadence)."""
  config.init_from = None
  config.dataset = 'digits'
  config.train_split = 'train'
  config.model.image_size = image_size
  config.pp_train = pp_train
  config.pp_eval = pp_eval or pp_train
  config.batch_size = 64
