r"""Shrink a structurally pruned model into a smaller dense one (command line).

    python -m vit_compress.compress.shrink_cli --model=WORKDIR/model --out=WORKDIR/shrunk

`--model` may also name the workdir itself. An existing `--out` is never
replaced unless `--overwrite` is given; mistakes print one `error:` line and
exit 2 with every file as it was.

The trained model that `configs/prune.py` saves has its pruned heads, neurons
and layers set exactly to zero (the masks are applied before saving, and
masked updates keep them there). A group whose every weight is zero is
therefore pruned: the masks are recovered from the zeros, `structure.shrink`
gathers what is kept, and the result is saved with its own model config
(per-layer head counts and MLP widths), so it reloads with nothing else.
ViTs, R+ViTs and the transformers inside MobileViT blocks shrink.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from vit_compress import artifact
from vit_compress import cli
from vit_compress import transforms
from vit_compress import models
from vit_compress.compress import structure
from vit_compress.models import families

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'A saved model directory (e.g. WORKDIR/model).')
flags.DEFINE_string('out', None, 'Where to save the shrunk model.')
flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
cli.define_verbose()


masks_from_zeros = structure.masks_from_zeros   # its home: compress.structure


def check_out(model_dir: str, out_dir: str, overwrite: bool) -> None:
  """Refuses to write over the input or, without `overwrite`, anything existing."""
  if not out_dir:
    raise ValueError('--out is empty: give a new directory, e.g. '
                     '--out=WORKDIR/shrunk.')
  if os.path.abspath(out_dir) == os.path.abspath(model_dir):
    raise ValueError(f'--out={out_dir} is the input model: give a new directory.')
  if tf.io.gfile.exists(out_dir):
    if not tf.io.gfile.isdir(out_dir):
      raise FileExistsError(f'--out={out_dir} is a file: give a directory.')
    if tf.io.gfile.listdir(out_dir) and not overwrite:
      raise FileExistsError(
          f'--out={out_dir} already exists and is not empty (another model?). '
          'Nothing was written: give a new directory, or add --overwrite to '
          'replace it.')


def shrink_saved_model(model_dir: str, out_dir: str):
  """Loads, shrinks and saves; returns (new_config, params before, params after)."""
  loaded = artifact.load(model_dir, key='--model', require_float=(
      'shrink the float model it came from (then quantize the shrunk one).'))
  model_config, params, extra = loaded.model_config, loaded.params, loaded.extra
  family = model_config.get('family', 'vit')
  if not families.can_shrink(model_config):
    raise ValueError(f'{model_dir} holds a {family!r} model; shrink removes '
                     'heads, neurons and layers of ViTs and MobileViTs.')
  new_params, new_config = transforms.apply('shrink', params, model_config)
  before, after = models.count_params(params), models.count_params(new_params)
  extra = dict(extra or {}, shrunk_from=model_dir, params_before=before,
               params_after=after)
  artifact.save(out_dir, new_params, new_config, extra=extra, overwrite=True)
  logging.info('Shrunk %s: %d -> %d parameters; heads per layer %s, MLP widths %s.',
               model_dir, before, after, *structure.widths(new_config))
  return new_config, before, after


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  sys.exit(cli.report(lambda: run(FLAGS.model, FLAGS.out, FLAGS.overwrite),
                      FLAGS.verbose))


def run(model: str, out: str, overwrite: bool = False) -> None:
  """The command: checks every argument before reading or writing a model."""
  cli.require(model, 'model', 'WORKDIR/model')
  cli.require(out, 'out', 'WORKDIR/shrunk')
  model_dir = artifact.resolve(model, '--model')
  check_out(model_dir, out, overwrite)
  new_config, before, after = shrink_saved_model(model_dir, out)
  heads, mlp = structure.widths(new_config)
  print(f'{before} -> {after} parameters ({after / before:.1%}); '
        f'heads per layer {heads}, MLP widths {mlp}; saved to {out}')


def command_line() -> None:
  cli.run_command(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  command_line()
