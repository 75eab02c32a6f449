"""Text ops for LiT: captions from label names, and tokenization."""
from typing import Optional, Sequence

import tensorflow as tf

from vit_compress.data import captions as captions_lib
from vit_compress.data import preprocess
from vit_compress.data import tokenizers

register = preprocess.PP_OPS.register


@register('captions')
def captions(templates: captions_lib.Templates = 'default',
             class_names: Optional[Sequence[str]] = None, key: str = 'label',
             outkey: str = 'texts', sample: bool = True):
  """A caption for the label: one template, drawn per example if `sample`.

  The draw uses the example's seed, so it is deterministic; sample=False
  always takes the first template (evaluation). class_names defaults to the
  dataset's label names; templates is a name in captions.TEMPLATES or a
  tuple of '{}' patterns.
  """
  if not class_names:
    raise ValueError('captions needs class names: a dataset whose label '
                     'feature has names, or class_names=(...).')
  table = tf.constant(captions_lib.caption_texts(class_names, templates))
  num_templates = table.shape[1]

  def op(example):
    label = tf.cast(preprocess.get_key(example, key, 'captions'), tf.int32)
    if sample:
      which = tf.random.stateless_uniform(
          [], seed=preprocess.next_seed(example), minval=0,
          maxval=num_templates, dtype=tf.int32)
    else:
      which = tf.constant(0, tf.int32)
    example[outkey] = table[label, which]
    return example
  return op


@register('tokenize')
def tokenize(max_len: Optional[int] = None, tokenizer: str = 'bytes',
             tokenizer_model: Optional[str] = None, key: str = 'texts',
             outkey: str = 'tokens'):
  """Text (or a vector of texts) -> int32 ids padded/cut to (..., max_len).

  Defaults come from config.model (max_len, tokenizer, tokenizer_model).
  """
  if max_len is None:
    raise ValueError('tokenize needs max_len: tokenize(16), or a LiT '
                     'config.model with max_len.')
  tok = tokenizers.get_tokenizer(tokenizer, max_len, tokenizer_model)

  def op(example):
    text = preprocess.get_key(example, key, 'tokenize')
    if text.shape.rank == 0:
      example[outkey] = tok.tf_tokenize(text)
    else:
      example[outkey] = tf.map_fn(
          tok.tf_tokenize, text,
          fn_output_signature=tf.TensorSpec([max_len], tf.int32))
    return example
  return op
