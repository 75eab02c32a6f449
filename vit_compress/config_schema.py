"""The experiment config schema: every key with its default, and start-up validation.

`complete(config)` lays a user's config (a file under configs/, plus
`--config.x=y` overrides) over `defaults()`, once: every section registered
in `config_sections.SECTIONS` (each next to the code that reads it: optim.py,
losses.py, quantize.py, sharding.py, ...; the ones without a module of their
own below) is filled from its defaults, and the code afterwards reads fields
directly. A key the defaults do not know is an error naming the closest valid
keys, so a misspelling never silently falls back to a default. `validate`
then checks what can be checked before any compile: the mode (`modes.MODES`),
the model, patch sizes against the image size, the loss, and each section
through its registered validator.
"""
from absl import logging
import ml_collections
from ml_collections import config_dict

from vit_compress import augreg
from vit_compress import config_aliases
from vit_compress import config_sections
from vit_compress import losses
# optim, sharding and quantize register their sections on import.
from vit_compress import optim  # pylint: disable=unused-import
from vit_compress import sharding  # pylint: disable=unused-import
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import quantize  # pylint: disable=unused-import
from vit_compress.compress import student_init
from vit_compress.data import defaults as data_defaults
from vit_compress.data import mixup
from vit_compress.models import families
from vit_compress.config_sections import SECTIONS
from vit_compress.config_sections import check_type
from vit_compress.modes import MODES
from vit_compress.registry import unknown_name_message

# Eval metrics a checkpoint records, so `best_metric` may keep the best by them.
BEST_METRICS = ('accuracy', 'top5')

# Numbers with a range, {dotted key: (low, high, low_inclusive, what)}; every
# other number only has to be finite.
_RANGES = {
    # lr 0 is allowed: a run that must leave the weights as they are.
    'schedule.base_lr': (0.0, None, True, 'the peak learning rate'),
    'schedule.warmup_steps': (0, None, True, 'steps of linear warm-up'),
    'schedule.end_lr_ratio': (0.0, 1.0, True, 'the final lr / base_lr'),
    'optim.weight_decay': (0.0, None, True, 'the weight decay'),
    'optim.momentum': (0.0, 1.0, True, 'the momentum, below 1'),
    'optim.b1': (0.0, 1.0, True, "Adam's b1, below 1"),
    'optim.b2': (0.0, 1.0, True, "Adam's b2, below 1"),
    'optim.eps': (0.0, None, False, "Adam's epsilon"),
    'distill.temperature': (0.0, None, False, 'the softmax temperature'),
    'distill.weight': (0.0, 1.0, True, 'the share of the distillation term'),
    'keep_checkpoints': (1, None, True, 'how many checkpoints are kept'),
    'shuffle_buffer': (1, None, True, 'the shuffle buffer size'),
}


def teacher_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      # A saved model directory (its config comes with it), or a vit_jax /
      # big_vision .npz with `model` naming its zoo architecture.
      'checkpoint': config_dict.placeholder(str),
      'model': config_dict.placeholder(str),
      # Batch key holding the teacher's view: 'image' (the student's, same
      # augmentation) or e.g. 'teacher_image' made by the pp string at the
      # teacher's own resolution.
      'image_key': 'image',
  })


def lit_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'templates': 'default',   # zero-shot prompt templates (data.captions)
  })


# The sections whose defaults live in modules that do not register them
# themselves; optim, schedule, distill, quant and distributed register at
# their import.
config_sections.register('teacher', teacher_defaults)
config_sections.register('lit', lit_defaults)
config_sections.register('student_init', student_init.default_config,
                         student_init.validate)
config_sections.register('prune', pruning.default_config, pruning.validate)
config_sections.register('mixup', mixup.default_config, mixup.validate)


def _defaults_of(name: str) -> ml_collections.ConfigDict:
  return SECTIONS.get(name).defaults()


def defaults() -> ml_collections.ConfigDict:
  """Every top-level key an experiment config may set."""
  c = ml_collections.ConfigDict()
  c.mode = 'train'
  c.model = zoo.get('Nano_2')
  c.init_from = config_dict.placeholder(str)   # .npz or saved model to start from
  c.init_into = config_dict.placeholder(str)   # e.g. 'img': LiT's image tower
  # A student built from the init_from teacher: its layers / heads / neurons.
  c.student_init = _defaults_of('student_init')
  for key, value in data_defaults.defaults().items():   # dataset ... seed
    c[key] = value
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  c.keep_checkpoints = 2
  c.best_metric = 'accuracy'   # one of BEST_METRICS; None keeps no best one
  # Rerunning a workdir under keys outside workdir.SAFE_ON_RESUME is refused;
  # True continues from its latest checkpoint under the new settings.
  c.resume_with_changes = False
  c.loss = 'softmax_xent'
  c.optim = _defaults_of('optim')
  c.schedule = _defaults_of('schedule')
  c.distill = _defaults_of('distill')
  c.mixup = _defaults_of('mixup')   # in the step, on the view both models see
  c.teacher = _defaults_of('teacher')
  c.prune = _defaults_of('prune')
  c.quant = _defaults_of('quant')
  c.mesh = (('data', -1),)
  c.sharding_rules = 'replicated'
  c.distributed = _defaults_of('distributed')
  c.lit = _defaults_of('lit')
  c.recipe = ml_collections.ConfigDict()  # stages of configs/quickstart.py
  return c


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The user's config over the defaults; unknown keys are errors.

  vit_jax's flat keys (`base_lr`, `batch`, `pp.train`, ...) are resolved onto
  ours by config_aliases; a teacher named without weights gets the published
  fine-tuned AugReg file where one exists (`_teacher_weights`).
  """
  base = defaults()
  config, aliased = config_aliases.extract(config)
  config_aliases.check_not_both(aliased, config, base, 'config file')
  known = set(base.keys())
  for key in config.keys():
    if key not in known:
      raise ValueError(unknown_name_message('config key', key, known) +
                       config_aliases.suggest(key, base) +
                       ' (Is it misspelled, or in the wrong section?)')
  out = ml_collections.ConfigDict(type_safe=False)
  for key in base.keys():
    value = config.get(key, base[key]) if key in config else base[key]
    if key in SECTIONS:   # validated in `validate`, with the rest
      value = config_sections.complete_section(key, value, check=False)
    else:
      check_type(value, base[key], f'config.{key}')
    out[key] = value
  if isinstance(out.model, str):
    out.model = zoo.get(out.model)
  config_aliases.apply(out, aliased, 'config file')
  _teacher_weights(out)
  return out


def _teacher_weights(config) -> None:
  """A teacher named by zoo name only: the fine-tuned AugReg ImageNet-2012
  file of that model, when the student trains on ImageNet 2012."""
  tc = config.teacher
  if not losses.needs_teacher(config) or tc.checkpoint or not tc.model:
    return
  published = augreg.imagenet2012_teacher(tc.model)
  if published and config.dataset == 'imagenet2012':
    tc.checkpoint = published
    logging.info('Teacher %s: the fine-tuned AugReg ImageNet-2012 file %s.',
                 tc.model, published)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks that need no data and no compile; messages name the key."""
  if config.mode not in MODES:
    raise ValueError(unknown_name_message('config.mode', config.mode,
                                          MODES.names()))
  model = config.model
  family = families.of(model)
  if family.image_tower or model.get('patches'):
    _check_patches(family.image_config(model), family.image_config_key())
  losses.LOSSES.get(config.loss)
  if losses.needs_teacher(config) and not config.teacher.checkpoint:
    raise ValueError(_no_teacher_message(config))
  if config.loss == 'deit' and not model.get('distill_token'):
    raise ValueError("config.loss='deit' needs a distillation token: set "
                     'config.model.distill_token=True.')
  for key in ('total_steps', 'batch_size', 'log_every', 'eval_every',
              'checkpoint_every'):
    if not isinstance(config[key], int) or config[key] <= 0:
      raise ValueError(f'config.{key} must be a positive integer, got {config[key]!r}.')
  _check_numbers(config)
  lit = family.eval_kind == 'zero_shot'   # zero-shot evals record accuracy only
  if config.best_metric and config.best_metric not in (
      BEST_METRICS[:1] if lit else BEST_METRICS):
    raise ValueError(unknown_name_message('config.best_metric',
                                          config.best_metric, BEST_METRICS[:1] if lit else BEST_METRICS) +
                     ' (or None to keep only the latest checkpoints).')
  for name in SECTIONS.names():
    section = SECTIONS.get(name)
    if section.validate is not None:
      section.validate(config[name])
  if student_init.active(config.student_init) and not config.init_from:
    raise ValueError('config.student_init builds the student from a teacher: set '
                     'config.init_from to the teacher\'s saved model directory.')
  accum = config.optim.accum_steps
  if not isinstance(accum, int) or accum < 1 or config.batch_size % accum:
    raise ValueError(f'config.optim.accum_steps={accum!r} must be a positive '
                     f'integer dividing config.batch_size={config.batch_size}.')


def _no_teacher_message(config) -> str:
  """No teacher weights: how to make them (fine-tune the teacher first)."""
  model = config.teacher.model
  if not model:
    return (f"config.loss='{config.loss}' distils from a teacher: set "
            'config.teacher.checkpoint (a saved model directory, or an .npz '
            'with config.teacher.model).')
  where = ('no fine-tuned AugReg file of it is published'
           if not augreg.imagenet2012_teacher(model) else
           f'its published fine-tuned AugReg file is for imagenet2012, not '
           f'{config.dataset!r}')
  return (f'config.teacher.model={model!r} has no weights: '
          f'config.teacher.checkpoint is unset and {where}. Fine-tune the '
          f'teacher first: python -m vit_compress.main --config=configs/augreg.py:'
          f'{model} --workdir=/tmp/teacher_{model} --config.dataset='
          f'{config.dataset}, then pass --config.teacher.checkpoint=/tmp/teacher_'
          f'{model}/model.')


def _check_patches(model, where: str) -> None:
  """The patch grid must tile the image (after a hybrid stem's downsampling)."""
  size = model.image_size
  stride = 1
  if model.get('resnet') is not None:
    stride = 4 * 2 ** max(len(model.resnet.num_layers) - 1, 0)
  patch = model.patches.size[0]
  if size % stride or (size // stride) % patch:
    raise ValueError(
        f'{where}.patches.size={tuple(model.patches.size)} does not divide '
        f'{where}.image_size={size}' +
        (f' after the ResNet stem downsamples it {stride}x' if stride > 1 else '') +
        f'; choose an image size that is a multiple of {patch * stride}.')


def _check_numbers(config) -> None:
  """No NaN or Inf anywhere in the config; the ranged keys inside their range."""
  import math  # pylint: disable=g-import-not-at-top

  def walk(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(name + '.', value)
      elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'config.{name}={value} is not a finite number.')
  walk('', config)
  for key, (low, high, low_inclusive, what) in _RANGES.items():
    section, _, leaf = key.rpartition('.')
    node = config[section] if section else config
    value = node.get(leaf)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    below = value < low if low_inclusive else value <= low
    if below or (high is not None and value > high):
      bound = f'>= {low}' if low_inclusive else f'> {low}'
      if high is not None:
        bound += f' and <= {high}'
      raise ValueError(f'config.{key}={value!r} is out of range: {what} must be '
                       f'{bound}.')


def validate_data(config, info) -> None:
  """Checks against the dataset (its DatasetInfo; no example is read):
  the train and eval splits select examples."""
  eval_split = config.eval_split or info.default_eval_split
  for key, split in (('train_split', config.train_split),
                     ('eval_split', eval_split)):
    count = info.num_examples(split)
    if count == 0:
      raise ValueError(f'config.{key}={split!r} selects no examples of '
                       f'{config.dataset} (splits: {dict(info.splits)}): give a '
                       "non-empty split or slice, e.g. 'train[:90%]'.")
