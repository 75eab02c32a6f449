"""The real train step on a random batch, as `train.train_and_evaluate` builds it.

    import train_step                       # from a script in bench/
    step, state, batch, module, model_config = train_step.build(config, 32, 224)

The config (e.g. configs/augreg.py's vit_jax recipe) goes through
`train.prepare`, `make_init_fn` / `make_train_step` / `optim.make_optimizer`;
the state is created sharded and the step jitted with the same shardings and
donated state, so a bench times exactly what training runs.
"""
import copy

import jax
import jax.numpy as jnp
import numpy as np

from vit_compress import data
from vit_compress import optim
from vit_compress import sharding
from vit_compress import train


def build(config, batch_size: int, image_size: int, dtype: str = 'float32',
          depth=None):
  """(jitted step, state, batch, module, model config): the real train step
  on a random batch.

  The step is not compiled yet: `step.lower(state, batch, {}).compile()`.
  """
  config = train.prepare(copy.deepcopy(config))
  config.init_from = None
  config.batch_size = batch_size
  m = config.model
  m.image_size, m.dtype = image_size, dtype
  if depth is not None:
    m.transformer.num_layers = depth
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.batch_size, mesh)

  rng = np.random.default_rng(0)
  b = config.batch_size
  label = rng.integers(0, m.num_classes, b).astype(np.int32)
  batch = {'image': rng.standard_normal((b, image_size, image_size, 3), np.float32),
           'label': label, 'labels': np.eye(m.num_classes, dtype=np.float32)[label],
           'mask': np.ones(b, np.float32)}
  batch = jax.device_put(batch, data.batch_sharding(mesh))

  module = train.build_student(config)
  tx, schedule = optim.make_optimizer(config)
  example = jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), batch)
  init_fn = train.make_init_fn(config, module, None, tx, tx, example)
  key = jax.random.key(config.seed)
  shardings = sharding.param_shardings(jax.eval_shape(init_fn, key), mesh,
                                       config.sharding_rules)
  state = jax.jit(init_fn, out_shardings=shardings)(key)
  step = jax.jit(train.make_train_step(config, module, None, tx, tx, schedule),
                 in_shardings=(shardings, data.batch_sharding(mesh), {}),
                 out_shardings=(shardings, sharding.replicated(mesh)),
                 donate_argnums=(0,))
  return step, state, batch, module, m
