"""A trained digits model with test images as PNG files, shared by the predict
tests (`digits_run` in conftest.py), and the eval module's labels for it."""
import numpy as np
import tensorflow as tf

from tests.helpers.train_helpers import digits_config
from vit_compress import data
from vit_compress import evaluation
from vit_compress import train

N = 12   # test images


def build(digits_data_dir, root):
  """A 20-step Nano_2 digits model in `root`/run, N test images as PNG files,
  and the eval pipeline's batch of the same images."""
  config = digits_config(digits_data_dir)
  train.train_and_evaluate(config, str(root / 'run'))
  source = data.get_source('digits', digits_data_dir)
  raw, _ = source.read('test')
  files = []
  for i, example in enumerate(raw.take(N)):
    image = source.load(example)['image']
    files.append(str(root / f'digit_{i}.png'))
    if image.dtype != tf.string:   # a decoded image: store it losslessly
      image = tf.io.encode_png(image)
    tf.io.write_file(files[-1], image)
  batch = next(iter(data.make_eval_iterator(train.prepare(config))))
  return str(root / 'run' / 'model'), files, np.asarray(batch['image'])[:N], root


def eval_labels(module, params, images):
  """The eval module's top-1 class names for `images`."""
  logits = evaluation.forward_fn(module)(params, images)
  names = data.get_dataset_info('digits').class_names
  return [names[i] for i in np.argmax(np.asarray(logits), -1)]
