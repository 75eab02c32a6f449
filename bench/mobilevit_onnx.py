"""MobileViT converts to ONNX with jax2onnx and runs in ONNX Runtime (a check).

    PYTHONPATH=$PWD python bench/mobilevit_onnx.py [--model=MobileViT_XXS] [--image_size=256]

Random weights with non-trivial BatchNorm statistics; logits of ONNX Runtime
against JAX's on random images: max |difference| and top-1 agreement. The
project's ONNX export module is written elsewhere; this only shows that the
model's ops convert.
"""
import argparse
import os
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

from vit_compress import models, param_paths, zoo  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='MobileViT_XXS')
  parser.add_argument('--image_size', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  args = parser.parse_args()
  import jax2onnx  # pylint: disable=g-import-not-at-top
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top

  config = zoo.get(args.model, image_size=args.image_size)
  module = models.build(config)
  rng = np.random.default_rng(0)
  params = param_paths.map_with_paths(
      lambda p, s: (rng.uniform(0.5, 1.5, s.shape) if p.endswith('running_var')
                    else rng.normal(0, 0.1, s.shape)).astype(np.float32)
      if p.endswith(('running_mean', 'running_var'))
      else rng.normal(0, 0.05, s.shape).astype(np.float32),
      models.param_shapes(config))
  fn = lambda images: module.apply({'params': params}, images)
  shape = (args.batch, args.image_size, args.image_size, 3)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, 'model.onnx')
    jax2onnx.to_onnx(fn, [shape], return_mode='file', output_path=path)
    size = os.path.getsize(path)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    images = rng.uniform(-1, 1, shape).astype(np.float32)
    ours = np.asarray(jax.jit(fn)(images))
    theirs = session.run(None, {session.get_inputs()[0].name: images})[0]
  print(machine.describe())
  print(f'{args.model} {args.image_size}px: ONNX file {size / 2**20:.1f} MiB; '
        f'max |ORT - JAX| {np.abs(theirs - ours).max():.2e} '
        f'(max |logit| {np.abs(ours).max():.3f}); top-1 agreement '
        f'{(theirs.argmax(-1) == ours.argmax(-1)).mean():.0%} of {args.batch}')


if __name__ == '__main__':
  main()
