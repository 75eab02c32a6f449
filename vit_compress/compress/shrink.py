r"""Shrink a structurally pruned model into a smaller dense one (command line).

    python -m vit_compress.compress.shrink --model=WORKDIR/model --out=WORKDIR/shrunk

The trained model that `configs/prune.py` saves has its pruned heads, neurons
and layers set exactly to zero (the masks are applied before saving, and
masked updates keep them there). A group whose every weight is zero is
therefore pruned: the masks are recovered from the zeros, `structure.shrink`
gathers what is kept, and the result is saved with its own model config
(per-layer `num_heads` / `mlp_dim`), so it reloads with nothing else.
"""
from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from vit_compress import checkpoint
from vit_compress import models
from vit_compress.compress import structure

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'A saved model directory (e.g. WORKDIR/model).')
flags.DEFINE_string('out', None, 'Where to save the shrunk model.')


def masks_from_zeros(params):
  """1 where a weight is non-zero: recovers the masks of a masked model."""
  return jax.tree.map(lambda p: (np.asarray(p) != 0).astype(np.asarray(p).dtype),
                      params)


def shrink_saved_model(model_dir: str, out_dir: str):
  """Loads, shrinks and saves; returns (new_config, params before, params after)."""
  model_config, params, extra = checkpoint.load_model(model_dir, with_extra=True)
  new_params, new_config = structure.shrink(params, masks_from_zeros(params),
                                            model_config)
  before, after = models.count_params(params), models.count_params(new_params)
  extra = dict(extra or {}, shrunk_from=model_dir, params_before=before,
               params_after=after)
  checkpoint.save_model(out_dir, new_params, new_config, extra=extra,
                        overwrite=True)
  logging.info('Shrunk %s: %d -> %d parameters; heads per layer %s, MLP widths %s.',
               model_dir, before, after, new_config.transformer.num_heads,
               new_config.transformer.mlp_dim)
  return new_config, before, after


def main(argv):
  del argv
  new_config, before, after = shrink_saved_model(FLAGS.model, FLAGS.out)
  print(f'{before} -> {after} parameters ({after / before:.1%}); '
        f'heads per layer {tuple(new_config.transformer.num_heads)}, '
        f'MLP widths {tuple(new_config.transformer.mlp_dim)}; saved to {FLAGS.out}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['model', 'out'])
  app.run(main)
