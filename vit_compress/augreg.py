"""The public AugReg checkpoints ("How to train your ViT"): where they live, what they are.

One home for the bucket and the file names every config and the teacher
lookup use. A file name starts with its model (`R_Ti_16-i21k-300ep-...`):
the part before the first '-' is the zoo name, exactly as vit_jax's
`configs/augreg.py` reads it. Names with '--imagenet2012-...' are the same
upstream run fine-tuned on ImageNet 2012.
"""
from vit_compress import zoo
from vit_compress.registry import UnknownNameError, unknown_name_message

BUCKET = 'gs://vit_models/augreg'

# Recommended ImageNet-21k upstream checkpoints (300 epochs), by zoo name.
UPSTREAM = {
    'Ti_16': 'Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0',
    'S_16': 'S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0',
    'S_32': 'S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0',
    'B_16': 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0',
    'B_32': 'B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0',
    'L_16': 'L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0',
    'R_Ti_16': 'R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0',
    'R26_S_32': 'R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0',
    'R50_L_32': 'R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1',
}

# The ImageNet-2012 fine-tuned files at 384 px (20k steps) that timm's
# `*.augreg_in21k_ft_in1k` weights point to: ready-made teachers.
IMAGENET2012 = {
    'Ti_16': 'Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0'
             '--imagenet2012-steps_20k-lr_0.03-res_384',
    'S_16': 'S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0'
            '--imagenet2012-steps_20k-lr_0.03-res_384',
    'S_32': 'S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0'
            '--imagenet2012-steps_20k-lr_0.03-res_384',
    'B_16': 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0'
            '--imagenet2012-steps_20k-lr_0.01-res_384',
    'B_32': 'B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0'
            '--imagenet2012-steps_20k-lr_0.03-res_384',
    'L_16': 'L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1'
            '--imagenet2012-steps_20k-lr_0.01-res_384',
    'R_Ti_16': 'R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0'
               '--imagenet2012-steps_20k-lr_0.03-res_384',
    'R26_S_32': 'R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0'
                '--imagenet2012-steps_20k-lr_0.03-res_384',
    'R50_L_32': 'R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0'
                '--imagenet2012-steps_20k-lr_0.01-res_384',
}
IMAGENET2012_RES = 384


def path(filename: str) -> str:
  """gs:// path of an AugReg file name (with or without '.npz')."""
  name = filename[:-4] if filename.endswith('.npz') else filename
  return f'{BUCKET}/{name}.npz'


def model_of(filename: str) -> str:
  """The zoo name a file name starts with ('R_Ti_16-i21k-...' -> 'R_Ti_16').

  An unknown model is an error that names the file and the zoo's models.
  """
  head = filename.split('/')[-1].split('-')[0]
  name = zoo.canonical_name(head)
  if name not in zoo.names():
    raise UnknownNameError(
        f'AugReg file {filename!r}: ' + unknown_name_message(
            'AugReg model', head, [n for n in zoo.names() if n in UPSTREAM]) +
        ' The part before the first "-" is the model (e.g. '
        f"'{UPSTREAM['Ti_16']}').")
  return name


def imagenet2012_teacher(model: str):
  """The fine-tuned ImageNet-2012 file of a zoo model, or None if none is published."""
  name = IMAGENET2012.get(zoo.canonical_name(model))
  return path(name) if name else None
