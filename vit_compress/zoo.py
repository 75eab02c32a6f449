"""Named model hyperparameters: the whole ViT family, hybrids, Mixer, LiT, tiny models.

`get(name)` returns an `ml_collections.ConfigDict` that `vit_compress.models.build`
turns into a Flax module. vit_jax spellings (`ViT-B_16`, `R50+ViT-B_16`,
`R+ViT-Ti_16`, `Mixer-B_16`, `LiT-B16B_2`) are accepted too.

    python -m vit_compress.zoo [--image_size=224] [--num_classes=1000]

prints the model-selection table (parameters, tokens, GFLOPs, float32 MiB)
without allocating any weights.
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
             'LiT_L16S', 'LiT_L16Ti')


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
      'classifier': classifier,
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
@_register('testing')
def _testing():  # vit_jax's own testing model
  return vit(16, 10, 10, 2, 1)


@_register('Nano_2')
def _nano():
  c = vit(2, 32, 128, 2, 2)
  c.image_size = 8
  c.num_classes = 10
  return c


@_register('Micro_2')
def _micro():
  c = vit(2, 64, 256, 4, 4)
  c.image_size = 8
  c.num_classes = 10
  return c


@_register('Mini_4')
def _mini():
  c = vit(4, 96, 384, 6, 6)
  c.image_size = 16
  c.num_classes = 10
  return c


@_register('R_Nano_2')
def _r_nano():
  c = vit(2, 32, 128, 2, 2, resnet={'num_layers': (1,), 'width_factor': 0.5})
  c.image_size = 16
  c.num_classes = 10
  return c


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
  c = mixer(2, 32, 32, 128, 2)
  c.image_size = 8
  c.num_classes = 10
  return c


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
      # 'bytes' needs no files; 'sentencepiece' reads `tokenizer_model`;
      # 'bert_wordpiece' is tokenised outside (vocabulary file).
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
    _text_transformer(384, 12, 1536, 6, 16_000), (None, 1024), 'sentencepiece'))
_register('LiT_L16Ti')(lambda: lit(
    vit(16, *_VIT_SIZES['L']), 'text_transformer',
    _text_transformer(192, 12, 768, 3, 16_000), (None, 1024), 'sentencepiece'))


@_register('LiT_Nano')
def _lit_nano():
  image = _nano()
  # As LiT-B16B_2: the image embedding is the tower's pre-logits (no image
  # projection), so a locked, pretrained image tower is used as it is.
  return lit(image, 'text_transformer', _text_transformer(32, 2, 128, 2, 260),
             (None, 32), 'bytes', max_len=16)


# ---------------------------------------------------------------- the table
def describe(name: str, image_size: int = 224, num_classes: int = 1000) -> dict:
  """Parameters, tokens, GFLOPs and float32 MiB of a zoo model, without weights.

  Shapes come from `jax.eval_shape`; FLOPs from XLA's cost analysis of the
  lowered forward pass for one image (and, for LiT, one text).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top

  config = get(name)
  config.image_size = image_size
  if config.family == 'lit':
    config.image.image_size = image_size
  else:
    config.num_classes = num_classes
  module = models.build(config)
  shapes = models.param_shapes(config)
  inputs = jax.eval_shape(lambda: models.example_inputs(config, 1))
  lowered = jax.jit(lambda p, kw: module.apply({'params': p}, **kw)).lower(
      shapes, inputs)
  params = models.count_params(shapes)
  return {
      'name': config.name,
      'params': params,
      'tokens': _num_tokens(config, shapes),
      'gflops': lowered.cost_analysis()['flops'] / 1e9,
      'mib': params * 4 / 2**20,
  }


def _num_tokens(config, shapes) -> int:
  """Sequence length seen by the encoder (class token included)."""
  if config.family == 'lit':
    shapes = shapes['img']
  if config.family == 'mixer':
    return (config.image_size // config.patches.size[0]) ** 2
  return shapes['Transformer']['posembed_input']['pos_embedding'].shape[1]


def describe_many(selected, image_size=224, num_classes=1000, jobs=None):
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
  header = f'{"model":<12} {"params":>13} {"tokens":>7} {"GFLOPs":>9} {"MiB (f32)":>10}'
  lines = [header, '-' * len(header)]
  for r in rows:
    lines.append(f'{r["name"]:<12} {r["params"]:>13d} {r["tokens"]:>7d} '
                 f'{r["gflops"]:>9.2f} {r["mib"]:>10.1f}')
  return '\n'.join(lines)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  selected = f.models or PUBLISHED
  rows = describe_many(selected, f.image_size, f.num_classes, f.jobs)
  print(f'Model zoo at {f.image_size}px, {f.num_classes} classes '
        '(FLOPs: XLA cost analysis, one image; LiT adds one text of max_len tokens)')
  print(format_table(rows))


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  flags.DEFINE_integer('image_size', 224, 'Input resolution in pixels.')
  flags.DEFINE_integer('num_classes', 1000, 'Classifier classes (not used by LiT).')
  flags.DEFINE_list('models', None, 'Zoo names to show (default: the published models).')
  flags.DEFINE_integer('jobs', None, 'Processes tracing models in parallel (default: CPU cores).')
  app.run(main)
