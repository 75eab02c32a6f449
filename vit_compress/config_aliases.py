"""vit_jax's flat config keys (and the compression guides') as aliases of ours.

One table, `ALIASES`: each vit_jax key maps onto exactly one key of ours
(`base_lr` -> `schedule.base_lr`). An alias may be set in a config file
(`config.base_lr = 0.01`; `config_schema.complete` resolves it) or on the command
line (`--config.base_lr=0.01`; `main` resolves it, since ml_collections only
overrides keys a config already has). Invariants:

- the log says once what each alias set;
- an alias given together with its own target is an error (which one would
  win is a guess);
- a few aliases keep the config consistent with what they set, and say so:
  `teacher_model` turns on `loss='kd'` (vit_jax's guides distil with it),
  `pp.crop` also sets the crop ops of both pp strings to the model's size.

vit_jax keys that are already ours by name (`total_steps`, `eval_every`,
`checkpoint_every`, `shuffle_buffer`, `prefetch`, `dataset`) need no alias.
"""
import ast
import dataclasses
import difflib
import os
import re
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from absl import logging
import ml_collections


@dataclasses.dataclass(frozen=True)
class Alias:
  name: str                  # vit_jax's key ('base_lr', 'pp.train')
  target: str                # ours, dotted under config ('schedule.base_lr')
  doc: str
  # (value, config) -> the target's value, where it is not the value itself.
  convert: Optional[Callable[[Any, Any], Any]] = None
  # (value, config) -> [(other key, value)] set to keep the config consistent.
  follow: Optional[Callable[[Any, Any], List[Tuple[str, Any]]]] = None


def _resize(value, config):
  """pp.resize: the eval pp string's first resize to `value` pixels."""
  pp = config.pp_eval
  new, n = re.subn(r'\b(resize_small|resize)\(\d+', rf'\g<1>({int(value)}',
                   pp, count=1)
  if not n:
    raise ValueError(f'pp.resize={value}: config.pp_eval={pp!r} has no resize '
                     'op to change; set config.pp_eval instead.')
  return new


def _crop_ops(value, config):
  """pp.crop: the crop ops of both pp strings follow the model's size."""
  size = int(value)
  out = []
  for key in ('pp_train', 'pp_eval'):
    pp = config[key]
    new = re.sub(r'\b(inception_crop|central_crop|random_crop)\(\d+',
                 rf'\g<1>({size}', pp)
    if new != pp:
      out.append((key, new))
  return out


def _init_file(value, config):
  """model_or_filename: the file in the checkpoint directory (the AugReg
  bucket unless init_from or pretrained_dir names another)."""
  from vit_compress import augreg  # pylint: disable=g-import-not-at-top
  name = value if value.endswith('.npz') else f'{value}.npz'
  folder = os.path.dirname(config.init_from) if config.init_from else augreg.BUCKET
  return f'{folder}/{name}'


def _init_dir(value, config):
  """pretrained_dir: the directory part of init_from."""
  if not config.init_from:
    raise ValueError(f'pretrained_dir={value!r} names a directory, but no file '
                     'is chosen: also set model_or_filename (or init_from).')
  return f'{value.rstrip("/")}/{os.path.basename(config.init_from)}'


def _distil(value, config):
  from vit_compress import losses  # pylint: disable=g-import-not-at-top
  if value and config.loss not in losses.DISTILLATION_LOSSES:
    return [('loss', 'kd')]
  return []


ALIASES: Tuple[Alias, ...] = (
    Alias('base_lr', 'schedule.base_lr', 'peak learning rate'),
    Alias('batch', 'batch_size', 'global training batch'),
    Alias('batch_eval', 'eval_batch_size', 'global eval batch'),
    Alias('accum_steps', 'optim.accum_steps',
          'micro-batches per step (same result as the whole batch, less memory)'),
    Alias('warmup_steps', 'schedule.warmup_steps', 'linear warm-up steps'),
    Alias('decay_type', 'schedule.decay_type', "'cosine' or 'linear'"),
    Alias('grad_norm_clip', 'optim.grad_clip_norm', 'global-norm clip'),
    Alias('optim_dtype', 'optim.mu_dtype', 'dtype of the momentum'),
    Alias('pp.train', 'pp_train', 'training pp string'),
    Alias('pp.test', 'pp_eval', 'eval pp string'),
    Alias('pp.resize', 'pp_eval', "size of the eval pp string's resize",
          convert=_resize),
    Alias('pp.crop', 'model.image_size', 'crop size = model resolution '
          '(also the crop ops of both pp strings)', follow=_crop_ops),
    Alias('model_or_filename', 'init_from', 'checkpoint file (.npz) name',
          convert=_init_file),
    Alias('pretrained_dir', 'init_from', "checkpoint file's directory",
          convert=_init_dir),
    Alias('tfds_data_dir', 'data_dir', 'TFDS data directory'),
    Alias('progress_every', 'log_every', 'steps between progress logs'),
    Alias('wd', 'optim.weight_decay', 'weight decay (guides)'),
    Alias('do', 'model.transformer.dropout_rate', 'dropout (guides)'),
    Alias('sd', 'model.transformer.stochastic_depth', 'stochastic depth (guides)'),
    Alias('teacher_model', 'teacher.model', "teacher's zoo name (guides; "
          "also loss='kd')", follow=_distil),
    Alias('distill_weight', 'distill.weight',
          'alpha in alpha * T^2 * KL(teacher_T, student_T) + (1 - alpha) * CE'),
)
BY_NAME = {a.name: a for a in ALIASES}
SAME_NAME = ('total_steps', 'eval_every', 'checkpoint_every', 'shuffle_buffer',
             'prefetch', 'dataset')
_logged = set()


# ------------------------------------------------------------ dotted paths
def _has(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False
    node = node[part]
  return True


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def paths(config, prefix: str = '') -> List[str]:
  """Every dotted leaf key under a config ('optim.momentum', ...)."""
  out = []
  for key in config.keys():
    value = config[key]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out += paths(value, f'{prefix}{key}.')
    else:
      out.append(f'{prefix}{key}')
  return out


# ------------------------------------------------------------ resolution
def _order(names: Iterable[str]) -> List[str]:
  """Table order: model_or_filename is applied before pretrained_dir."""
  rank = {a.name: i for i, a in enumerate(ALIASES)}
  return sorted(names, key=rank.__getitem__)


def apply(config, values: Sequence[Tuple[str, Any]], source: str) -> List[str]:
  """Sets the target of each (alias, value) in `config`, in table order.

  Returns (and logs, each once per process) what each alias set.
  """
  values, messages = dict(values), []
  for name in _order(values):
    alias, value = BY_NAME[name], values[name]
    if not _has(config, alias.target):
      raise ValueError(f'{name}={value!r} ({source}) sets config.{alias.target}, '
                       'which this config does not have.')
    new = alias.convert(value, config) if alias.convert else value
    _set(config, alias.target, new)
    extra = alias.follow(value, config) if alias.follow else []
    for key, v in extra:
      _set(config, key, v)
    message = (f'vit_jax key {name}={value!r} ({source}) set config.{alias.target}'
               f'={new!r}' + ''.join(f', config.{k}={v!r}' for k, v in extra))
    messages.append(message)
    if message not in _logged:
      _logged.add(message)
      logging.info(message)
  return messages


def extract(config) -> Tuple[ml_collections.ConfigDict, List[Tuple[str, Any]]]:
  """(the config without its alias keys, [(alias, value)]) of a config file.

  An alias whose target the file also sets to a value of its own is an error.
  """
  found = []
  rest = ml_collections.ConfigDict(type_safe=False)
  for key in config.keys():
    value = config[key]
    if key in BY_NAME:
      found.append((key, value))
    elif key == 'pp' and hasattr(value, 'keys'):
      for sub in value.keys():
        if f'pp.{sub}' not in BY_NAME:
          raise ValueError(f'config.pp.{sub} is not a vit_jax pp key; they are '
                           f'{[a.name for a in ALIASES if a.name.startswith("pp.")]}.')
        found.append((f'pp.{sub}', value[sub]))
    else:
      rest[key] = value
  return (rest, found) if found else (config, found)


def check_not_both(values: Sequence[Tuple[str, Any]], user_config, defaults,
                   source: str) -> None:
  """An alias and its target both set by the user: refused.

  A target counts as set when the user config holds it with a value other
  than the default (a file built on `config_schema.defaults()` holds every key).
  """
  for name, value in values:
    target = BY_NAME[name].target
    reference = defaults
    if target.startswith('model.') and _has(user_config, 'model.name'):
      from vit_compress import zoo  # pylint: disable=g-import-not-at-top
      # A model's own defaults (L/16's dropout 0.1), not the default model's.
      reference = {'model': zoo.get(user_config.model.name)}
    if _has(user_config, target) and _has(reference, target):
      if _get(user_config, target) != _get(reference, target):
        raise ValueError(_both_message(name, target, source))


def _both_message(name: str, target: str, source: str) -> str:
  return (f'{name} ({source}) is vit_jax\'s name for config.{target}, which is '
          f'set too: give one of them.')


# ------------------------------------------------------------ command line
_FLAG = re.compile(r'^--config\.([A-Za-z_][\w.]*)=(.*)$', re.S)


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
  """(argv without `--config.ALIAS=value` flags, [(alias, raw value)]).

  An alias and its target both on the command line is an error.
  """
  rest, found, given = [], [], set()
  for arg in argv:
    m = _FLAG.match(arg)
    if m and m[1] in BY_NAME:
      found.append((m[1], m[2]))
    else:
      rest.append(arg)
      if m:
        given.add(m[1])
  for name, _ in found:
    target = BY_NAME[name].target
    if target in given:
      raise ValueError(f'--config.{name} is vit_jax\'s name for --config.{target}, '
                       'which is given too: give one of them.')
  return rest, found


def parse_value(raw: str, current: Any) -> Any:
  """A command-line string in the type of the key it sets (as config_flags does)."""
  if isinstance(current, bool):
    if raw.lower() in ('true', '1'):
      return True
    if raw.lower() in ('false', '0'):
      return False
    raise ValueError(f'{raw!r} is not True or False.')
  if isinstance(current, int):
    return int(raw)
  if isinstance(current, float):
    return float(raw)
  if isinstance(current, str):
    return raw
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def apply_command_line(config, values: Sequence[Tuple[str, str]]) -> List[str]:
  """Command-line aliases onto the loaded config file.

  Where the file has the target (files built on `config_schema.defaults()`), the
  target is set now, after the file, as any override is; a vit_jax-style
  file without that section gets the alias key, resolved by
  `config_schema.complete`.
  """
  direct, deferred = [], []
  for name, raw in values:
    alias = BY_NAME[name]
    if name in config or (name.startswith('pp.') and 'pp' in config):
      deferred.append((name, raw))   # the file itself uses vit_jax's keys
    elif _has(config, alias.target):
      # Converted aliases read their raw string (a size, a file name).
      current = raw if alias.convert else _get(config, alias.target)
      try:
        direct.append((name, parse_value(raw, current)))
      except ValueError:
        raise ValueError(f'--config.{name}={raw!r}: config.{alias.target} takes '
                         f'{type(current).__name__} values (its value is '
                         f'{current!r}).') from None
    else:
      deferred.append((name, raw))
  with config.unlocked():
    messages = apply(config, direct, 'command line')
    for name, raw in deferred:
      value = parse_value(raw, None)
      if name.startswith('pp.'):
        if 'pp' not in config:
          config.pp = ml_collections.ConfigDict(type_safe=False)
        config.pp[name[3:]] = value
      else:
        config[name] = value
  return messages


# ------------------------------------------------------------ suggestions
def suggest(key: str, defaults) -> str:
  """' Did you mean ...?' for an unknown key: keys whose last part is `key`,
  then close spellings of keys and aliases ('' when nothing is close)."""
  last = key.split('.')[-1]
  known = paths(defaults)
  same_leaf = [k for k in known if k.split('.')[-1] == last and k != key]
  close = difflib.get_close_matches(key, known + list(BY_NAME), n=3)
  close += difflib.get_close_matches(last, sorted({k.split('.')[-1] for k in known}
                                                  | set(BY_NAME)), n=3)
  leaf_of = {}
  for k in known:
    leaf_of.setdefault(k.split('.')[-1], k)
  names = []
  for k in same_leaf + close:
    k = leaf_of.get(k, k) if k not in known and k not in BY_NAME else k
    if k not in names and k != key:
      names.append(k)
  if not names:
    return ''
  return ' Did you mean ' + ', '.join(
      f"'{k}'" + (f" (vit_jax's name for '{BY_NAME[k].target}')" if k in BY_NAME
                  else '') for k in names[:4]) + '?'


def table_markdown() -> str:
  """The alias table as README shows it."""
  lines = ['| vit_jax key | our key | meaning |', '|---|---|---|']
  lines += [f'| `{a.name}` | `{a.target}` | {a.doc} |' for a in ALIASES]
  return '\n'.join(lines)
