"""Zero-shot classification with a two-tower (LiT) model.

Each class is written with every prompt template ('a photo of the digit 3.'),
the prompts are embedded by the text tower, and the class's classifier row is
the mean of its prompts' normalised embeddings, normalised again (averaging
templates smooths out wording). An image is assigned the class whose row has
the highest cosine similarity with its normalised image embedding.

The model is a Flax module called as `model.apply({'params': p}, images=...)`
/ `(..., tokens=...)` that returns a dict with 'zimg' / 'ztxt' (our LiT). The
tokenizer is passed in (`tokenize_fn(list_of_texts) -> (N, L) int array`),
e.g. `data.get_tokenizer('bytes', max_len)`, so that prompts are tokenised
exactly as training captions were.
"""
from typing import Any, Callable, Dict, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vit_compress.data import captions
from vit_compress.evaluation import classification

PyTree = Any
TokenizeFn = Callable[[Sequence[str]], np.ndarray]


def _normalize(z, axis=-1):
  return z / (jnp.linalg.norm(z, axis=axis, keepdims=True) + 1e-8)


def _embedding(out, key: str):
  if not isinstance(out, Mapping) or key not in out:
    raise ValueError(f'Zero-shot needs a two-tower model returning a dict with '
                     f'{key!r} (LiT); the model returned '
                     f'{sorted(out) if isinstance(out, Mapping) else type(out).__name__}.')
  return out[key]


def _tokens(tokenize_fn: TokenizeFn, texts: Sequence[str]) -> np.ndarray:
  tokens = np.asarray(tokenize_fn(list(texts)))
  if tokens.ndim != 2 or tokens.shape[0] != len(texts) or tokens.dtype.kind not in 'iu':
    raise ValueError(f'tokenize_fn must map {len(texts)} texts to an integer '
                     f'array of shape ({len(texts)}, max_len); got '
                     f'{tokens.dtype} {tokens.shape}.')
  return tokens.astype(np.int32)


def text_embed_fn(model) -> Callable[[PyTree, jax.Array], jax.Array]:
  return jax.jit(lambda p, t: _embedding(model.apply({'params': p}, tokens=t), 'ztxt'))


def zero_shot_classifier(model, params: PyTree, class_names: Sequence[str],
                         templates: captions.Templates, tokenize_fn: TokenizeFn,
                         *, batch_size: int = 256, embed_fn=None) -> jax.Array:
  """(num_classes, dim): per class, the normalised mean of its prompts'
  normalised text embeddings. `templates` is a name in data.captions.TEMPLATES
  or a sequence of '{}' patterns."""
  if not len(class_names):
    raise ValueError('zero_shot_classifier: class_names is empty.')
  texts = captions.caption_texts(class_names, templates)
  num_templates = len(texts[0])
  tokens = _tokens(tokenize_fn, [t for row in texts for t in row])
  embed_fn = embed_fn or text_embed_fn(model)
  chunks = []
  for start in range(0, len(tokens), batch_size):
    chunk = tokens[start:start + batch_size]
    real = len(chunk)
    if real < batch_size and len(tokens) > batch_size:  # one shape: one compile
      chunk = np.pad(chunk, ((0, batch_size - real), (0, 0)))
    chunks.append(embed_fn(params, chunk)[:real])
  z = _normalize(jnp.concatenate(chunks).astype(jnp.float32))
  z = z.reshape(len(class_names), num_templates, -1).mean(axis=1)
  return _normalize(z)


def zero_shot_fn(model, class_names: Sequence[str], templates: captions.Templates,
                 tokenize_fn: TokenizeFn, top_k: Sequence[int] = (1, 5)):
  """`fn(params, batches) -> metrics` of `zero_shot_accuracy`, jitted once."""
  embed_fn = text_embed_fn(model)

  def logits_fn(params_and_classifier, images):
    params, classifier = params_and_classifier
    zimg = _normalize(_embedding(model.apply({'params': params}, images=images), 'zimg'))
    return zimg @ classifier.T

  score = classification.accuracy_fn(logits_fn, top_k)

  def run(params, batches):
    classifier = zero_shot_classifier(model, params, class_names, templates,
                                      tokenize_fn, embed_fn=embed_fn)
    out = score((params, classifier), batches)
    out.pop('loss')  # cross-entropy of raw cosines: not a meaningful number
    return out
  return run


def zero_shot_accuracy(model, params: PyTree, batches: Iterable[Mapping[str, Any]],
                       *, class_names: Sequence[str],
                       templates: captions.Templates = 'default',
                       tokenize_fn: TokenizeFn,
                       top_k: Sequence[int] = (1, 5)) -> Dict[str, float]:
  """Zero-shot top-k (%) over labelled image batches: {'top1', 'top5', 'count'}."""
  return zero_shot_fn(model, class_names, templates, tokenize_fn, top_k)(
      params, batches)
