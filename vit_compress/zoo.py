"""Named model hyperparameters: the whole ViT family, hybrids, Mixer, LiT, tiny models.

`get(name)` returns an `ml_collections.ConfigDict` that `vit_compress.models.build`
turns into a Flax module. vit_jax spellings (`ViT-B_16`, `R50+ViT-B_16`,
`R+ViT-Ti_16`, `Mixer-B_16`, `LiT-B16B_2`) are accepted too.

    python -m vit_compress.zoo [--image_size=224] [--num_classes=1000] [--models=...]

prints the model-selection table (parameters, tokens, GFLOPs, float32 MiB)
without allocating any weights; `--measure` adds img/s measured on this
device beside the published AugReg numbers, and `--min_img_per_s` /
`--max_mib` keep the models that fit (vit_compress.zoo_measure).
"""
import re
from typing import Callable, Dict, Optional, Sequence

import ml_collections

from vit_compress.registry import UnknownNameError, unknown_name_message

_ZOO: Dict[str, Callable[[], ml_collections.ConfigDict]] = {}
# Models listed by `python -m vit_compress.zoo` and checked against DESIGN.md.
PUBLISHED = ('Ti_16', 'S_16', 'S_32', 'B_16', 'B_32', 'B_8', 'L_16', 'L_32',
             'H_14', 'R_Ti_16', 'R26_S_32', 'R26_B_32', 'R50_B_16', 'R50_L_32',
             'Mixer_B_16', 'Mixer_B_32', 'Mixer_L_16', 'LiT_B16B_2', 'LiT_L16L',
             'LiT_L16S', 'LiT_L16Ti', 'MobileViT_XXS', 'MobileViT_XS',
             'MobileViT_S')


def _register(name: str):
  def add(fn):
    _ZOO[name] = fn
    return fn
  return add


def names() -> Sequence[str]:
  return sorted(_ZOO)


def canonical_name(name: str) -> str:
  """Maps vit_jax spellings to zoo names: 'R50+ViT-B_16' -> 'R50_B_16'."""
  n = name.strip()
  n = re.sub(r'^ViT-', '', n)
  n = re.sub(r'^R\+ViT-', 'R_', n)
  n = re.sub(r'^(R\d+)\+ViT-', r'\1_', n)
  n = re.sub(r'^(Mixer|LiT)-', r'\1_', n)
  return n


def get(name: str, **overrides) -> ml_collections.ConfigDict:
  """The model config for a zoo name; keyword overrides replace top-level keys."""
  key = canonical_name(name)
  if key not in _ZOO:
    raise UnknownNameError(unknown_name_message('model', name, _ZOO))
  config = _ZOO[key]()
  config.name = key
  for k, v in overrides.items():
    if k not in config:
      raise UnknownNameError(unknown_name_message('model config key', k, config))
    config[k] = v
  return config


# ---------------------------------------------------------------- ViT family
def vit(patch: int, hidden: int, mlp: int, heads: int, layers: int,
        dropout: float = 0.0, resnet: Optional[dict] = None,
        classifier: str = 'token') -> ml_collections.ConfigDict:
  """A ViT config in vit_jax's layout, plus the knobs compression needs.

  `transformer.num_heads` and `transformer.mlp_dim` may also be tuples with one
  entry per layer (pruned models); `transformer.head_dim` stays the original
  width so that removing heads does not change the remaining ones. Hence the
  config is not type-safe: an int field may become a per-layer tuple.
  """
  return ml_collections.ConfigDict(type_safe=False, initial_dictionary={
      'name': '',
      'family': 'vit',
      'image_size': 224,
      'num_classes': 1000,
      'patches': {'size': (patch, patch)},
      'hidden_size': hidden,
      'transformer': {
          'num_layers': layers,
          'num_heads': heads,
          'mlp_dim': mlp,
          'head_dim': None,  # default: hidden_size // num_heads
          'dropout_rate': dropout,
          'attention_dropout_rate': 0.0,
          'stochastic_depth': 0.0,
      },
      'resnet': resnet,
      'classifier': classifier,   # 'token' | 'gap' | 'map' (attention pooling)
      'posemb': 'learn',          # or 'sincos2d' (fixed, big_vision)
      'representation_size': None,
      'distill_token': False,   # DeiT: a second token and head for the teacher
      'head_zeroinit': True,
      'tome_r': 0,              # token merging: tokens merged per layer
      'dtype': 'float32',       # computation dtype (e.g. bfloat16)
      'param_dtype': 'float32',
      'remat': False,           # rematerialise each block to save memory
      'scan': False,            # lax.scan over identical blocks (CPU: slower compile, bench/README.md)
  }, )


_VIT_SIZES = {  # hidden, mlp, heads, layers, dropout
    'Ti': (192, 768, 3, 12, 0.0),
    'S': (384, 1536, 6, 12, 0.0),
    'B': (768, 3072, 12, 12, 0.0),
    'L': (1024, 4096, 16, 24, 0.1),
    'H': (1280, 5120, 16, 32, 0.1),
}

for _size, _patches in (('Ti', (16,)), ('S', (16, 32)), ('B', (16, 32, 8)),
                        ('L', (16, 32)), ('H', (14,))):
  for _p in _patches:
    _register(f'{_size}_{_p}')(
        lambda s=_size, p=_p: vit(p, *_VIT_SIZES[s]))


def _hybrid(size: str, patch: int, stages: tuple, dropout=None):
  hidden, mlp, heads, layers, do = _VIT_SIZES[size]
  return vit(patch, hidden, mlp, heads, layers,
             dropout=do if dropout is None else dropout,
             resnet={'num_layers': stages, 'width_factor': 1})


_register('R_Ti_16')(lambda: _hybrid('Ti', 8, ()))
_register('R26_S_32')(lambda: _hybrid('S', 1, (2, 2, 2, 2)))
_register('R26_B_32')(lambda: _hybrid('B', 1, (2, 2, 2, 2)))
_register('R50_B_16')(lambda: _hybrid('B', 1, (3, 4, 9), dropout=0.1))
_register('R50_L_32')(lambda: _hybrid('L', 1, (3, 4, 6, 3)))


# Tiny models for tests, the quickstart and CPU work (8x8 to 32x32 images).
def _tiny(config: ml_collections.ConfigDict, image_size: int) -> ml_collections.ConfigDict:
  """A tiny model's config: digits-sized images and the digits' 10 classes."""
  config.image_size = image_size
  config.num_classes = 10
  return config


@_register('testing')
def _testing():  # vit_jax's own testing model
  return vit(16, 10, 10, 2, 1)


@_register('Nano_2')
def _nano():
  return _tiny(vit(2, 32, 128, 2, 2), image_size=8)


@_register('Micro_2')
def _micro():
  return _tiny(vit(2, 64, 256, 4, 4), image_size=8)


@_register('Mini_4')
def _mini():
  return _tiny(vit(4, 96, 384, 6, 6), image_size=16)


@_register('R_Nano_2')
def _r_nano():
  return _tiny(vit(2, 32, 128, 2, 2,
                   resnet={'num_layers': (1,), 'width_factor': 0.5}),
               image_size=16)


# ---------------------------------------------------------------- MLP-Mixer
def mixer(patch: int, hidden: int, tokens_mlp: int, channels_mlp: int,
          blocks: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'name': '',
      'family': 'mixer',
      'image_size': 224,
      'num_classes': 1000,
      'patches': {'size': (patch, patch)},
      'hidden_dim': hidden,
      'num_blocks': blocks,
      'tokens_mlp_dim': tokens_mlp,
      'channels_mlp_dim': channels_mlp,
      'dtype': 'float32',
      'param_dtype': 'float32',
  })


_register('Mixer_B_16')(lambda: mixer(16, 768, 384, 3072, 12))
_register('Mixer_B_32')(lambda: mixer(32, 768, 384, 3072, 12))
_register('Mixer_L_16')(lambda: mixer(16, 1024, 512, 4096, 24))


@_register('Mixer_Nano_2')
def _mixer_nano():
  return _tiny(mixer(2, 32, 32, 128, 2), image_size=8)


# ---------------------------------------------------------------- LiT
def _bert(size: str) -> dict:
  width, layers, heads = {'base': (768, 12, 12), 'large': (1024, 24, 16)}[size]
  return {'width': width, 'num_layers': layers, 'num_heads': heads,
          'mlp_dim': 4 * width, 'vocab_size': 30522, 'max_position': 512,
          'type_vocab_size': 2}


def _text_transformer(width, layers, mlp, heads, vocab):
  return {'width': width, 'num_layers': layers, 'num_heads': heads,
          'mlp_dim': mlp, 'vocab_size': vocab}


def lit(image: ml_collections.ConfigDict, text_model: str, text: dict,
        out_dim: tuple, tokenizer: str, max_len: int = 16):
  """Two towers (LiT): image ViT without its classifier head, a text tower."""
  image.num_classes = None
  image.head_zeroinit = False  # a zero projection would embed every image at 0
  return ml_collections.ConfigDict({
      'name': '',
      'family': 'lit',
      'image_size': image.image_size,
      'image': image,
      'text_model': text_model,   # 'bert' or 'text_transformer'
      'text': text,
      'out_dim': out_dim,         # (image, text) projection widths; None = none
      'max_len': max_len,
      # a data.TOKENIZERS name: 'bytes' needs no files; 'sentencepiece',
      # 'sentencepiece_eos' and 'bert_wordpiece' read `tokenizer_model` (the
      # .model / .txt vit_jax publishes beside each LiT file).
      'tokenizer': tokenizer,
      'tokenizer_model': None,
      'temperature_init': 0.0,     # t = exp(param), initialised at exp(0) = 1
      'dtype': 'float32',
      'param_dtype': 'float32',
  })


_register('LiT_B16B_2')(lambda: lit(vit(16, *_VIT_SIZES['B']), 'bert',
                                    _bert('base'), (None, 768), 'bert_wordpiece'))
_register('LiT_L16L')(lambda: lit(vit(16, *_VIT_SIZES['L']), 'bert',
                                  _bert('large'), (None, 1024), 'bert_wordpiece'))
_register('LiT_L16S')(lambda: lit(
    vit(16, *_VIT_SIZES['L']), 'text_transformer',
    _text_transformer(384, 12, 1536, 6, 16_000), (None, 1024), 'sentencepiece_eos'))
_register('LiT_L16Ti')(lambda: lit(
    vit(16, *_VIT_SIZES['L']), 'text_transformer',
    _text_transformer(192, 12, 768, 3, 16_000), (None, 1024), 'sentencepiece_eos'))

# vit_jax's first LiT release: an image projection as well (out_dim (768, 768)).
_register('LiT_B16B')(lambda: lit(vit(16, *_VIT_SIZES['B']), 'bert',
                                  _bert('base'), (768, 768), 'bert_wordpiece'))

@_register('LiT_Nano')
def _lit_nano():
  image = _nano()
  # As LiT-B16B_2: the image embedding is the tower's pre-logits (no image
  # projection), so a locked, pretrained image tower is used as it is.
  return lit(image, 'text_transformer', _text_transformer(32, 2, 128, 2, 260),
             (None, 32), 'bytes', max_len=16)



# ------------------------------------------------------ vit_jax's getters
# vit_jax's `configs/models.py` names, each returning our config of that
# model, so code written against vit_jax (`get_b16_config()`) keeps working.
# name -> (zoo name, top-level overrides).
VIT_JAX_GETTERS = {
    'testing': ('testing', {}), 'ti16': ('Ti_16', {}), 's16': ('S_16', {}),
    'b16': ('B_16', {}), 'l16': ('L_16', {}), 'h14': ('H_14', {}),
    's16_gap_norep': ('S_16', {'classifier': 'gap'}),
    'b16_gap_norep': ('B_16', {'classifier': 'gap'}),
    'b8': ('B_8', {}), 's32': ('S_32', {}), 'b32': ('B_32', {}),
    'l32': ('L_32', {}),
    's32_gap_norep': ('S_32', {'classifier': 'gap'}),
    'b32_gap_norep': ('B_32', {'classifier': 'gap'}),
    'r_ti16': ('R_Ti_16', {}), 'r50_b16': ('R50_B_16', {}),
    'r26_b32': ('R26_B_32', {}), 'r26_s32': ('R26_S_32', {}),
    'r50_l32': ('R50_L_32', {}),
    'mixer_b16': ('Mixer_B_16', {}), 'mixer_b32': ('Mixer_B_32', {}),
    'mixer_l16': ('Mixer_L_16', {}),
    'lit_b16b': ('LiT_B16B', {}), 'lit_b16b_2': ('LiT_B16B_2', {}),
    'lit_l16l': ('LiT_L16L', {}), 'lit_l16s': ('LiT_L16S', {}),
    'lit_l16ti': ('LiT_L16Ti', {}),
}


def _vit_jax_getter(short: str):
  name, overrides = VIT_JAX_GETTERS[short]

  def getter() -> ml_collections.ConfigDict:
    return get(name, **overrides)
  getter.__name__ = f'get_{short}_config'
  getter.__doc__ = f"vit_jax's {getter.__name__}(): our {name!r}" + (
      f' with {overrides}.' if overrides else '.')
  return getter


for _short in VIT_JAX_GETTERS:
  globals()[f'get_{_short}_config'] = _vit_jax_getter(_short)


def get_testing_unpooled_config():
  """vit_jax's per-token classifier test model: not available here."""
  raise ValueError("vit_jax's testing-unpooled model (classifier='unpooled', "
                   'logits per token) has no counterpart here; the classifiers '
                   "are 'token' and 'gap' (get_testing_config()).")

# ---------------------------------------------------------------- MobileViT
def mobilevit(widths, depths, expansion, transformer_dims, transformer_depths,
              num_features) -> ml_collections.ConfigDict:
  """A MobileViT config in timm's layout (`models/mobilevit.py`): stage s has
  depths[s] inverted residuals, then a MobileViT block if transformer_dims[s]."""
  n = len(widths)
  return ml_collections.ConfigDict({
      'name': '',
      'family': 'mobilevit',
      'image_size': 256,
      'num_classes': 1000,
      'stem_width': 16,
      'widths': tuple(widths),
      'depths': tuple(depths),
      'strides': (1,) + (2,) * (n - 1),
      'expansion': (float(expansion),) * n if not isinstance(expansion, tuple)
                   else expansion,
      'transformer_dims': tuple(transformer_dims),
      'transformer_depths': tuple(transformer_depths),
      'num_features': num_features,
      'patch_size': 2,
      'num_heads': 4,
      'mlp_ratio': 2.0,
      'dtype': 'float32',
      'param_dtype': 'float32',
  })


_MOBILEVIT_DEPTHS = ((1, 3, 1, 1, 1), (0, 0, 2, 4, 3))  # IR blocks, transformer layers
_register('MobileViT_XXS')(lambda: mobilevit(
    (16, 24, 48, 64, 80), _MOBILEVIT_DEPTHS[0], 2.0, (0, 0, 64, 80, 96),
    _MOBILEVIT_DEPTHS[1], 320))
_register('MobileViT_XS')(lambda: mobilevit(
    (32, 48, 64, 80, 96), _MOBILEVIT_DEPTHS[0], 4.0, (0, 0, 96, 120, 144),
    _MOBILEVIT_DEPTHS[1], 384))
_register('MobileViT_S')(lambda: mobilevit(
    (32, 64, 96, 128, 160), _MOBILEVIT_DEPTHS[0], 4.0, (0, 0, 144, 192, 240),
    _MOBILEVIT_DEPTHS[1], 640))


# ---------------------------------------------------------------- the table
def sized(name: str, image_size: Optional[int] = None,
          num_classes: int = 1000) -> ml_collections.ConfigDict:
  """A zoo model's config at `image_size` (None: its own) with `num_classes`
  classes where it has a classifier head (LiT's towers have none)."""
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  config = get(name)
  config.image_size = image_size or config.image_size
  family = models.families.of(config)
  family.image_config(config).image_size = config.image_size
  if family.class_head:
    config.num_classes = num_classes
  return config


def describe(name: str, image_size: Optional[int] = None,
             num_classes: int = 1000) -> dict:
  """Parameters, tokens, GFLOPs and float32 MiB of a zoo model, without weights.

  Shapes come from `jax.eval_shape`; FLOPs from XLA's cost analysis of the
  lowered forward pass for one image (and, for LiT, one text).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top

  config = sized(name, image_size, num_classes)
  image_size = config.image_size
  module = models.build(config)
  shapes = models.param_shapes(config)
  inputs = jax.eval_shape(lambda: models.example_inputs(config, 1))
  lowered = jax.jit(lambda p, kw: module.apply({'params': p}, **kw)).lower(
      shapes, inputs)
  params = models.count_params(shapes)
  return {
      'name': config.name,
      'image_size': image_size,
      'params': params,
      'tokens': _num_tokens(config, shapes),
      'gflops': lowered.cost_analysis()['flops'] / 1e9,
      'mib': params * 4 / 2**20,
  }


def _num_tokens(config, shapes) -> int:
  """Sequence length seen by the encoder (class token included)."""
  from vit_compress.models import families  # pylint: disable=g-import-not-at-top
  return families.of(config).num_tokens(config, shapes)


def describe_many(selected, image_size=None, num_classes=1000, jobs=None):
  """`describe` for several models, traced in parallel processes (tracing is
  single-threaded Python, so one process per core roughly divides the time)."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  jobs = jobs or os.cpu_count() or 1
  if jobs == 1 or len(selected) == 1:
    return [describe(n, image_size, num_classes) for n in selected]
  # 'spawn': forking a process that already initialised JAX can deadlock.
  with concurrent.futures.ProcessPoolExecutor(
      jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
    return list(pool.map(describe, selected, [image_size] * len(selected),
                         [num_classes] * len(selected)))


def format_table(rows) -> str:
  header = f'{"model":<14} {"params":>13} {"tokens":>7} {"GFLOPs":>9} {"MiB (f32)":>10}'
  lines = [header, '-' * len(header)]
  for r in rows:
    lines.append(f'{r["name"]:<14} {r["params"]:>13d} {r["tokens"]:>7d} '
                 f'{r["gflops"]:>9.2f} {r["mib"]:>10.1f}')
  return '\n'.join(lines)


def main(argv):
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  from vit_compress import cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  sys.exit(cli.report(command, flags.FLAGS.verbose))


def command():
  """The zoo command: the table, and the measurements, its flags ask for."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vit_compress import zoo_measure  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  selected = f.models or PUBLISHED
  for name in selected:
    get(name)   # an unknown name fails here, before any model is traced
  for flag in ('image_size', 'num_classes'):
    if f[flag].value is not None and f[flag].value < 1:
      raise ValueError(f'--{flag}={f[flag].value} must be a positive integer.')
  if f.jobs is not None and f.jobs < 1:
    raise ValueError(f'--jobs={f.jobs} must be a positive integer.')
  rows = describe_many(selected, f.image_size, f.num_classes, f.jobs)
  if not (f.measure or f.min_img_per_s is not None):
    if f.max_mib is not None:
      rows = [r for r in rows if r['mib'] <= f.max_mib]
    where = f'{f.image_size}px' if f.image_size else "each model's resolution"
    print(f'Model zoo at {where}, {f.num_classes} classes '
          '(FLOPs: XLA cost analysis, one image; LiT adds one text of max_len tokens)')
    print(format_table(rows))
    return
  batch_sizes = (1, f.batch_size)
  zoo_measure.measure(rows, f.image_size, f.num_classes, batch_sizes, f.budget_s,
                      get_config=sized)
  device = next((r['device'] for r in rows if 'device' in r), 'this device')
  print(zoo_measure.legend(f.image_size, device, f.budget_s))
  if f.min_img_per_s is not None or f.max_mib is not None:
    fits = zoo_measure.select(rows, f.min_img_per_s, f.max_mib, f.batch_size)
    print(f'{len(fits)} of {len(rows)} models fit (>= {f.min_img_per_s} img/s at '
          f'batch {f.batch_size}, <= {f.max_mib} MiB), most accurate first:')
    rows = fits
  print(zoo_measure.format_table(rows, batch_sizes))


if __name__ == '__main__':
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer('image_size', None, 'Input resolution in pixels '
                       '(default: each model\'s own, 224 for ViTs, 256 for MobileViT).')
  flags.DEFINE_integer('num_classes', 1000, 'Classifier classes (not used by LiT).')
  flags.DEFINE_list('models', None, 'Zoo names to show (default: the published models).')
  flags.DEFINE_integer('jobs', None, 'Processes tracing models in parallel (default: CPU cores).')
  flags.DEFINE_bool('measure', False, 'Measure img/s on this device (batch 1 '
                    'and --batch_size), beside the published numbers.')
  flags.DEFINE_integer('batch_size', 64, 'The large batch --measure times.')
  flags.DEFINE_float('budget_s', 120.0, 'Seconds --measure may take; models '
                     'that would not fit are skipped and marked.')
  flags.DEFINE_float('min_img_per_s', None, 'Only models at least this fast '
                     '(measured at --batch_size; implies --measure).')
  flags.DEFINE_float('max_mib', None, 'Only models at most this big (float32 MiB).')
  from vit_compress import cli  # pylint: disable=g-import-not-at-top
  cli.define_verbose()
  cli.run_command(main, flags_parser=cli.parse_flags)
