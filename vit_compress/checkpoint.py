"""`vit_compress.checkpoint`: the module vit_jax and its guides teach.

It is `checkpoint_files` (vit_jax / big_vision / timm weight files and our
saved models) under vit_jax's name, plus `export_optimized`, the guides' one
call for edge artifacts. `edge` reads checkpoints, so this facade sits above
both and nothing in the package imports it: the layers below use
`checkpoint_files` directly.
"""
# pylint: disable=wildcard-import,unused-wildcard-import
from vit_compress import edge
from vit_compress.checkpoint_files import *  # noqa: F401,F403


def export_optimized(model, input_shape, output_path, checkpoint=None, **kwargs):
  """Edge artifacts (TFLite and ONNX, float and int8) of `model` at `input_shape`,
  each checked and timed; returns the manifest naming the fastest that passes.

  `model`: a zoo name (weights from `checkpoint`, an .npz or saved model; or
  random with `random_init=True`), a saved model directory or workdir, or an
  .npz. Other options: `vit_compress.edge.export_optimized`.
  """
  return edge.export_optimized(model, input_shape, output_path,
                               checkpoint_path=checkpoint, **kwargs)
