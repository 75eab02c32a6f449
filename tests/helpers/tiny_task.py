"""A small learnable task and a tiny trained ViT for compression tests.

Ten fixed random 8x8x3 class prototypes plus Gaussian noise: learnable in a
few hundred SGD steps by zoo 'Nano_2', yet noisy enough that accuracy is not
saturated, so a compression method that hurts shows up in the numbers. The
compression checks take (model config, params, eval function), so the same
checks run on digits once the trainer exists.
"""
import functools
from typing import Dict, Iterator, Tuple

import jax
import numpy as np
import optax

from vit_compress import models
from vit_compress import zoo

NUM_CLASSES = 10
IMAGE_SIZE = 8
PROTOTYPE_STD = 0.5
NOISE_STD = 0.8  # Nano_2 reaches ~92% in 300 steps: learnt, not saturated
EVAL_SIZE = 2000


def prototypes(seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  shape = (NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, 3)
  return rng.normal(size=shape).astype(np.float32) * PROTOTYPE_STD


def sample(n: int, seed: int, protos=None) -> Tuple[np.ndarray, np.ndarray]:
  """n (images, labels); the same seed gives the same examples."""
  protos = prototypes() if protos is None else protos
  rng = np.random.default_rng(seed + 1000)
  labels = rng.integers(0, NUM_CLASSES, size=n)
  noise = rng.normal(size=(n,) + protos.shape[1:]).astype(np.float32) * NOISE_STD
  return protos[labels] + noise, labels.astype(np.int32)


def batches(batch_size: int = 64, seed: int = 1) -> Iterator[Dict[str, np.ndarray]]:
  """Endless training batches in the data pipeline's format ('image', 'label')."""
  step = 0
  while True:
    images, labels = sample(batch_size, seed * 100_003 + step)
    yield {'image': images, 'label': labels}
    step += 1


def eval_set() -> Tuple[np.ndarray, np.ndarray]:
  return sample(EVAL_SIZE, seed=-7)


def train(model, params, steps: int, lr: float = 0.1, batch_size: int = 64,
          seed: int = 1, mutable=()):
  """SGD with momentum and cosine decay on softmax cross-entropy; returns params
  (and the mutable collections, e.g. qwix 'quant_stats', when `mutable`)."""
  step, tx = _train_step(model, steps, lr, tuple(mutable))
  opt_state, state = tx.init(params), {}
  data = batches(batch_size, seed)
  for _ in range(steps):
    batch = next(data)
    params, opt_state, state = step(params, opt_state, state,
                                    batch['image'], batch['label'])
  return (params, state) if mutable else params


@functools.lru_cache(maxsize=None)
def _train_step(model, steps, lr, mutable):
  """One jitted step per (model, schedule): compiling is most of a tiny test's time."""
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.sgd(optax.cosine_decay_schedule(lr, steps), momentum=0.9))

  @jax.jit
  def step(params, opt_state, state, images, labels):
    def loss_fn(p):
      variables = {'params': p, **state}
      if mutable:
        logits, new_state = model.apply(variables, images, train=True,
                                        mutable=list(mutable))
      else:
        logits, new_state = model.apply(variables, images, train=True), state
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return loss.mean(), dict(new_state)
    grads, new_state = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_state

  return step, tx


def accuracy(model, params, images=None, labels=None) -> float:
  """Top-1 accuracy in percent (default: on the fixed eval set)."""
  if images is None:
    images, labels = eval_set()
  logits = _logits_fn(model)(params, images)
  return float(100.0 * np.mean(np.argmax(np.asarray(logits), -1) == labels))


def logits(model, params, images) -> np.ndarray:
  """model.apply, jitted once per model (cheaper than op-by-op dispatch)."""
  return np.asarray(_logits_fn(model)(params, images))


@functools.lru_cache(maxsize=None)
def _logits_fn(model):
  return jax.jit(lambda p, x: model.apply({'params': p}, x))


def nano_config():
  return zoo.get('Nano_2')


@functools.lru_cache(maxsize=None)
def trained_nano(steps: int = 300):
  """(model config, float params, eval function) of Nano_2 trained on the task."""
  config = nano_config()
  model = models.build(config)
  init = jax.jit(lambda key: models.init(config, key))(jax.random.key(0))
  return config, train(model, init, steps), accuracy

