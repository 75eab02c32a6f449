"""Token merging (ToMe): measured throughput against r, tokens merged per layer.

    python bench/tome_speed.py [--model=Ti_16] [--image_size=224] \
        [--batch_size=8] [--r=0,4,8,12,16] [--runs=5]

For each r the ViT runs a jitted forward pass on one batch: one call to
compile and warm up, then `runs` timed calls; the table shows the median
img/s, the token count after the last block (class token included), XLA's
FLOPs per image and the speed-up over r=0. Weights are random (ToMe adds no
parameters and speed does not depend on the values). About two minutes of
CPU time with the defaults, mostly compiling.
"""
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from vit_compress import models
from vit_compress import zoo
from vit_compress.models import tome
from vit_compress.models import vit

flags.DEFINE_string('model', 'Ti_16', 'Zoo model name.')
flags.DEFINE_integer('image_size', 224, 'Input resolution in pixels.')
flags.DEFINE_integer('batch_size', 8, 'Images per forward pass.')
flags.DEFINE_list('r', ['0', '4', '8', '12', '16'], 'Tokens merged per layer.')
flags.DEFINE_integer('runs', 5, 'Timed forward passes per r (the median is shown).')
FLAGS = flags.FLAGS


def model_config(r: int):
  config = zoo.get(FLAGS.model, tome_r=r)
  config.image_size = FLAGS.image_size
  return config


def compiled_forward(r: int, params, images):
  """(jitted forward pass, warmed up; tokens after the last block; GFLOPs/img)."""
  config = model_config(r)
  module = models.build(config)
  forward = jax.jit(lambda p, x: module.apply({'params': p}, x))
  flops = forward.lower(params, images[:1]).cost_analysis()['flops']
  forward(params, images).block_until_ready()  # compile and warm up
  grid = (FLAGS.image_size // config.patches.size[0]) ** 2
  layers = config.transformer.num_layers
  tokens = tome.merged_token_counts(grid + 1, 1, vit.per_layer(r, layers, 'tome_r'))
  return forward, tokens[-1], flops / 1e9


def main(argv):
  del argv
  base = model_config(0)
  # The same weights for every r: merging adds no parameters.
  params = jax.jit(lambda key: models.init(base, key))(jax.random.key(0))
  images = jax.random.normal(jax.random.key(1), (FLAGS.batch_size, FLAGS.image_size,
                                                 FLAGS.image_size, 3), jnp.float32)
  rs = [int(v) for v in FLAGS.r]
  compiled = {r: compiled_forward(r, params, images) for r in rs}
  # Rounds over all r, so a machine that gets busier or quieter while the
  # benchmark runs biases no r in particular.
  seconds = {r: [] for r in rs}
  for _ in range(FLAGS.runs):
    for r in rs:
      start = time.perf_counter()
      compiled[r][0](params, images).block_until_ready()
      seconds[r].append(time.perf_counter() - start)

  print(f'{FLAGS.model} at {FLAGS.image_size}px, batch {FLAGS.batch_size}, '
        f'median of {FLAGS.runs} runs on {jax.devices()[0].device_kind}')
  header = (f'{"r":>3} {"tokens (last block)":>20} {"GFLOPs/img":>11} '
            f'{"img/s":>9} {"speed-up":>9}')
  print(header)
  print('-' * len(header))
  speed = {r: FLAGS.batch_size / statistics.median(seconds[r]) for r in rs}
  for r in rs:
    _, tokens, gflops = compiled[r]
    print(f'{r:>3} {tokens:>20} {gflops:>11.3f} {speed[r]:>9.1f} '
          f'{speed[r] / speed[rs[0]]:>8.2f}x')


if __name__ == '__main__':
  app.run(main)
