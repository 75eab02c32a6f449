"""A loaded artifact you call on images: its preprocessing, logits, features.

    p = Predictor(model_config, module, params, pp, class_names)
    p(images)          # top-k (class name, probability) per image
    p.embed(images)    # pre-logits features;  p.zero_shot(images, classes): LiT

Invariant: what a family decides (a class head, zero-shot scoring, the image
tower's embedding) is read from its adapter (`models.families`); the eval pp
loses its label ops (`image_pp`), so a Predictor needs images only. `predict`
builds one from any artifact; `predict_runtime` subclasses it for files that
run in their own runtimes.
"""
import dataclasses
import os
from typing import Any, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

_LABEL_OPS = ('onehot', 'captions', 'tokenize')   # need labels or texts


def image_pp(pp: str) -> str:
  """An eval pp string without the ops that read labels or make texts."""
  from vit_compress.data import preprocess  # pylint: disable=g-import-not-at-top
  ops = [op for op in preprocess.split_ops(pp)
         if op.split('(')[0].strip() not in _LABEL_OPS]
  return '|'.join(ops)


@dataclasses.dataclass
class Predictor:
  """A loaded artifact you call on images (paths, encoded bytes or arrays)."""
  model_config: ml_collections.ConfigDict
  module: Any
  params: Any
  pp: str
  class_names: Tuple[str, ...]
  quantized: bool = False

  def __post_init__(self):
    import vit_compress.data  # pylint: disable=g-import-not-at-top,unused-import
    from vit_compress import evaluation  # pylint: disable=g-import-not-at-top
    from vit_compress.data import preprocess  # pylint: disable=g-import-not-at-top
    self._pp_fn = preprocess.build(self.pp)
    self._logits = jax.jit(evaluation.forward_fn(self.module))

  def preprocess(self, images: Sequence[Any]) -> np.ndarray:
    """(N, H, W, 3) float32 model inputs, by the artifact's eval pp string."""
    out = []
    for image in images:
      if isinstance(image, (str, os.PathLike)):
        with tf.io.gfile.GFile(os.fspath(image), 'rb') as f:
          image = f.read()
      value = tf.constant(image) if isinstance(image, bytes) else tf.convert_to_tensor(
          np.asarray(image))
      if value.dtype != tf.string and value.shape.rank == 2:
        value = value[..., None]   # grayscale (H, W)
      out.append(self._pp_fn({'image': value})['image'].numpy())
    return np.stack(out).astype(np.float32)

  @property
  def family(self):
    """The model family's adapter (models.families): what it decides here."""
    from vit_compress.models import families  # pylint: disable=g-import-not-at-top
    return families.lookup(self.model_config)

  def logits(self, images) -> np.ndarray:
    if not self.family.class_head:
      raise ValueError('A LiT model has no classifier: call zero_shot(images, '
                       'classes) (--classes=a,b,... on the command line).')
    return np.asarray(self._logits(self.params, self.preprocess(images)))

  def __call__(self, images, top_k: int = 5) -> List[List[Tuple[str, float]]]:
    return self._top_k(self.logits(images), top_k, self.class_names)

  def embed(self, images) -> np.ndarray:
    """Pre-logits features: the ViT's pooled token (after `pre_logits` when
    it has one), Mixer's pooled features, LiT's normalised image embedding."""
    from vit_compress import models  # pylint: disable=g-import-not-at-top
    x = self.preprocess(images)
    if not self.family.class_head:   # the image outputs are the embedding
      return np.asarray(self.family.image_fn(self.module)(self.params, x))
    if self.quantized:
      raise ValueError('embeddings are read from a float model; use the float '
                       'artifact this quantized one was made from.')
    headless = ml_collections.ConfigDict(self.model_config.to_dict(), type_safe=False)
    headless.num_classes = None
    params = {k: v for k, v in self.params.items() if k not in ('head', 'head_dist')}
    return np.asarray(models.build(headless).apply({'params': params}, x))

  def zero_shot(self, images, classes: Sequence[str], top_k: int = 5,
                templates='default'):
    """LiT: top-k of `classes` by prompt-averaged text embedding."""
    from vit_compress import data  # pylint: disable=g-import-not-at-top
    from vit_compress.evaluation import zero_shot as zs  # pylint: disable=g-import-not-at-top
    c = self.model_config
    if not self.family.zero_shot:
      raise ValueError(f'--classes is zero-shot, for LiT models; this is a '
                       f'{c.get("family")!r} classifier with its own classes.')
    tokenize = data.get_tokenizer(c.tokenizer, c.max_len, c.get('tokenizer_model'))
    classifier = zs.zero_shot_classifier(self.module, self.params, list(classes),
                                         templates, tokenize)
    zimg = self.embed(images)
    zimg = zimg / np.linalg.norm(zimg, axis=-1, keepdims=True)
    scores = zimg @ np.asarray(classifier).T * float(
        np.exp(np.asarray(self.params['t'])[0]))
    return self._top_k(scores, top_k, tuple(classes))

  @staticmethod
  def _top_k(logits, k: int, names: Sequence[str]):
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1))
    out = []
    for row in probs:
      order = np.argsort(-row, kind='stable')[:k]
      out.append([(names[i] if i < len(names) else f'class {i}', float(row[i]))
                  for i in order])
    return out
