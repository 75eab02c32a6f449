"""Input pipeline: datasets, preprocessing ops, tokenizers, global batches.

  info = data.validate_config(config, mesh)       # at start-up, reads nothing
  train = data.make_train_iterator(config, mesh, start_step=step)
  batch = next(train)     # {'image', 'label', 'labels', 'mask', ...}: jax.Arrays
  for batch in data.make_eval_iterator(config, mesh): ...   # 'mask' pads

Importing this package registers the TFDS dataset `digits`, the dataset
sources by prefix (`SOURCES`: 'digits', 'folder:', 'tfds:'), and every
preprocessing op, and hides GPUs from TensorFlow (JAX owns the accelerator;
tf.data runs on the host).
"""
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except (RuntimeError, ValueError):   # TF already initialised its devices
  pass

# pylint: disable=g-import-not-at-top,wrong-import-position
from vit_compress.data import digits        # registers the TFDS builder
from vit_compress.data import ops_image     # registers pp ops
from vit_compress.data import ops_keys
from vit_compress.data import ops_text
from vit_compress.data.captions import caption_texts
from vit_compress.data.captions import TEMPLATES
from vit_compress.data.pipeline import BatchIterator
from vit_compress.data.pipeline import make_eval_dataset
from vit_compress.data.pipeline import make_eval_iterator
from vit_compress.data.pipeline import make_train_dataset
from vit_compress.data.pipeline import make_train_iterator
from vit_compress.data.pipeline import validate_config
from vit_compress.data.preprocess import PP_OPS
from vit_compress.data.sources import DatasetInfo
from vit_compress.data.sources import DatasetNotPreparedError
from vit_compress.data.sources import get_dataset_info
from vit_compress.data.sources import get_source
from vit_compress.data.sources import SOURCES
from vit_compress.data.source import Source
from vit_compress.data.tokenizers import BYTES_VOCAB_SIZE
from vit_compress.data.tokenizers import get_tokenizer
from vit_compress.sharding import batch_sharding
from vit_compress.sharding import default_mesh
