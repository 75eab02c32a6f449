"""The training loop: one jitted step with shardings, for every method.

    metrics = train.train_and_evaluate(config, workdir)

The step is built from parts, each with its own home: the loss
(`losses.StepLoss`: the configured loss on model-output dicts, with any
parameters of its own), pruning (`pruning.make`: hooks before the step and
after the gradients; a no-op part when off), the model family
(`models.families`: the model's inputs from a batch, its eval kind) and QAT
(only the module is swapped). So distillation only adds a teacher's outputs,
and `make_train_step` reads top to bottom the same for every method. The
periodic evaluation is `evaluation.EVAL_KINDS`, by the family's eval kind. The
state is created already sharded (eval_shape, then a jit of
the initialiser with out_shardings), the step is jitted with input/output
shardings and donates the state. Randomness is `fold_in(seed, step)`, and the
data iterator starts at the restored step, so a resumed run is bit-identical
to an uninterrupted one.
"""
import contextlib
import dataclasses
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow as tf

from vit_compress import checkpoint_files
from vit_compress import data
from vit_compress import evaluation
from vit_compress import config_schema
from vit_compress import losses
from vit_compress import models
from vit_compress import optim
from vit_compress import sharding
from vit_compress import workdir as workdir_lib
from vit_compress import zoo
from vit_compress.compress import pruning
from vit_compress.compress import quantize
from vit_compress.compress import student_init
from vit_compress.data import mixup
from vit_compress.evaluation.periodic import evaluate  # pylint: disable=unused-import
from vit_compress.evaluation.periodic import zero_shot_evaluator  # pylint: disable=unused-import
from vit_compress.models import batch_norm
from vit_compress.models import families

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


# ---------------------------------------------------------------- the model
def model_inputs(model_config, batch, image_key: str = 'image') -> Dict[str, Any]:
  return families.of(model_config).inputs(batch, image_key)


def model_outputs(module, model_config, params, batch, *, train: bool,
                  rng: Optional[jax.Array] = None, capture=(),
                  image_key: str = 'image') -> Dict[str, Any]:
  """The model's outputs as the dict every loss reads.

  'logits' (+ 'dist_logits' for a DeiT token while training), LiT's 'zimg',
  'ztxt', 't', 'logits', and 'intermediates' {module path: output} for the
  module paths in `capture` (e.g. 'Transformer/encoderblock_3').
  """
  kwargs = dict(train=train)
  if rng is not None:
    kwargs['rngs'] = {'dropout': rng}
  inputs = model_inputs(model_config, batch, image_key)
  # Training collects BatchNorm's new running statistics (models.batch_norm).
  mutable = [batch_norm.COLLECTION] if train else []
  if capture:
    wanted = set(capture)
    raw, state = module.apply(
        {'params': params}, **inputs, **kwargs,
        mutable=['intermediates'] + mutable,
        capture_intermediates=lambda m, _: '/'.join(m.scope.path) in wanted)
    intermediates = {}
    for name in capture:
      node = state['intermediates']
      for part in name.split('/'):
        node = node[part]
      value = node['__call__'][0]
      intermediates[name] = value[0] if isinstance(value, tuple) else value
  elif mutable:
    (raw, state), intermediates = module.apply(
        {'params': params}, **inputs, **kwargs, mutable=mutable), None
  else:
    raw, state, intermediates = module.apply(
        {'params': params}, **inputs, **kwargs), {}, None
  if isinstance(raw, dict):
    out = dict(raw)
  elif isinstance(raw, tuple):
    out = {'logits': raw[0], 'dist_logits': raw[1]}
  else:
    out = {'logits': raw}
  if intermediates is not None:
    out['intermediates'] = intermediates
  if state.get(batch_norm.COLLECTION):
    out[batch_norm.COLLECTION] = state[batch_norm.COLLECTION]
  return out


def build_student(config) -> Any:
  """The model to train; with `config.quant.mode='qat'`, wrapped by qwix so the
  forward pass fake-quantizes (straight-through gradients, float parameters)."""
  module = models.build(config.model)
  if config.quant.mode != 'qat':
    return module
  if config.quant.act_static:
    raise ValueError('config.quant.act_static=True is not trained with QAT here: '
                     'train with weight-only or dynamic activation quantization, '
                     'then calibrate static scales on the result (mode ptq).')
  return quantize.qat_model(module, config.quant)


@dataclasses.dataclass
class Teacher:
  module: Any
  config: ml_collections.ConfigDict
  params: PyTree
  image_key: str


def load_teacher(config, mesh) -> Optional[Teacher]:
  """The teacher of a distillation loss, restored with its own model config."""
  if not losses.needs_teacher(config):
    return None
  tc = config.teacher
  path = _model_path(tc.checkpoint, 'config.teacher.checkpoint')
  if tf.io.gfile.isdir(path):
    model_config, params = checkpoint_files.load_model(path)
    if tc.model and zoo.canonical_name(tc.model) != model_config.get('name'):
      raise ValueError(f'config.teacher.model={tc.model!r} but the saved model '
                       f'{path} is a {model_config.get("name")!r}: name '
                       'the model it holds, or leave teacher.model unset.')
  else:
    if not tc.model:
      raise ValueError(f'config.teacher.checkpoint={tc.checkpoint!r} is not a saved '
                       'model directory; for an .npz also set config.teacher.model '
                       '(a zoo name, e.g. B_16).')
    model_config = zoo.get(tc.model)
    model_config.num_classes = config.model.num_classes
    model_config.image_size = config.model.image_size
    params = checkpoint_files.load_npz(path, model_config)
  _check_teacher_fits(config, model_config, tc.checkpoint)
  rules = config.sharding_rules
  params = jax.device_put(params, sharding.param_shardings(params, mesh, rules))
  logging.info('Teacher %s: %d parameters from %s.', model_config.get('name'),
               models.count_params(params), tc.checkpoint)
  return Teacher(models.build(model_config), model_config, params, tc.image_key)


def _check_teacher_fits(config, teacher_config, path) -> None:
  """Losses on logits compare the teacher's classes with the student's one by one."""
  if (not losses.compares_teacher_classes(config) or
      not families.of(config.model).class_head):
    return
  theirs, ours = teacher_config.get('num_classes'), config.model.num_classes
  if theirs != ours:
    raise ValueError(
        f'config.teacher.checkpoint={path!r} predicts {theirs} classes but the '
        f'student has {ours} ({config.dataset}): distil from a teacher trained '
        f'on the same classes, or fine-tune it on {config.dataset} first.')


# ---------------------------------------------------------------- the state
def _teacher_outputs(teacher: Optional[Teacher], params, batch, capture):
  """The teacher's outputs on the same batch (None without a teacher)."""
  if teacher is None:
    return None
  return model_outputs(teacher.module, teacher.config, params, batch,
                       train=False, capture=capture, image_key=teacher.image_key)


def make_init_fn(config, module, teacher: Optional[Teacher], tx, loss_tx,
                 example_batch) -> Callable[[jax.Array], PyTree]:
  """rng -> initial train state (pure, so it can be eval_shape'd and jitted)."""
  pruner = pruning.make(config.prune)
  loss = losses.StepLoss(config, loss_tx)

  def init(rng):
    params_rng, loss_rng = jax.random.split(rng)
    inputs = model_inputs(config.model, example_batch)
    params = module.init(params_rng, **inputs)['params']
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'opt_state': tx.init(params)}
    student = model_outputs(module, config.model, params, example_batch,
                            train=False, capture=loss.student_capture)
    teacher_out = _teacher_outputs(teacher, teacher.params if teacher else None,
                                   example_batch, loss.teacher_capture)
    state.update(loss.init(loss_rng, student, teacher_out))
    state.update(pruner.init(params))
    return state

  return init


def _loss_optimizer(config):
  """The student's optimiser without its path regexes, for loss parameters."""
  loss_config = ml_collections.ConfigDict(config.to_dict())
  loss_config.optim.frozen = None
  loss_config.optim.lr_mults = ()
  loss_config.optim.weight_decay = 0.0
  return optim.make_optimizer(loss_config)[0]


# ---------------------------------------------------------------- the step
def accumulate_gradients(grad_fn, accum_steps: int):
  """`grad_fn(trainable, batch, rng, *args)` averaged over `accum_steps` equal
  micro-batches (a scan), with the same signature and outputs.

  The mean of their mean gradients is the big batch's mean gradient, so the
  update equals one step on all of it (BatchNorm's running statistics: the
  mean of the micro-batches' EMAs). Micro-batch i draws `fold_in(rng, i)`.
  """
  if accum_steps == 1:
    return grad_fn

  def accumulated(trainable, batch, rng, *args):
    micro = jax.tree.map(
        lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]),
        batch)

    def body(carry, xs):
      i, microbatch = xs
      out = grad_fn(trainable, microbatch, jax.random.fold_in(rng, i), *args)
      return jax.tree.map(jnp.add, carry, out), None

    zeros = jax.eval_shape(grad_fn, trainable, jax.tree.map(lambda x: x[0], micro),
                           rng, *args)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
    return jax.tree.map(lambda x: x / accum_steps, total)

  return accumulated


def make_train_step(config, module, teacher: Optional[Teacher], tx, loss_tx,
                    schedule):
  """(state, batch, teacher_params) -> (state, metrics); pure and jittable.

  One mixed view of the batch; the pruner's masks at this step; gradients of
  the student's and the loss's own parameters (accumulated over
  micro-batches); the optimiser's update, which the pruner masks; the loss's
  parameters updated by their own optimiser; metrics.
  """
  pruner = pruning.make(config.prune)
  loss = losses.StepLoss(config, loss_tx)
  base_rng = jax.random.key(config.seed)

  def loss_fn(trainable, batch, rng, teacher_params):
    params, loss_params = trainable
    student = model_outputs(module, config.model, params, batch, train=True,
                            rng=rng, capture=loss.student_capture)
    teacher_out = jax.lax.stop_gradient(_teacher_outputs(
        teacher, teacher_params, batch, loss.teacher_capture))
    value, metrics = loss(student, batch, teacher_out, loss_params)
    return value, (metrics, student.get(batch_norm.COLLECTION, {}))

  grad_fn = accumulate_gradients(jax.value_and_grad(loss_fn, has_aux=True),
                                 config.optim.accum_steps)

  def step_fn(state, batch, teacher_params):
    step = state['step']
    rng = jax.random.fold_in(base_rng, step)
    # One mixed view for both models (consistent teaching); off when p = 0.
    batch = mixup.mix(jax.random.fold_in(rng, 1), batch, config.mixup)
    # Masks first (at this step), so the forward pass sees the pruned zeros.
    params, pruned = pruner.before_step(state)
    (value, (metrics, stats)), (grads, loss_grads) = grad_fn(
        (params, loss.params(state)), batch, rng, teacher_params)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    updates, pruned = pruner.after_grads(pruned, params, grads, updates)
    # Running statistics are not trained: their EMA replaces whatever the
    # optimiser did to them (their gradient is zero).
    new_params = batch_norm.replace_running_stats(
        optax.apply_updates(params, updates), stats)
    new_state = dict(state, step=step + 1, params=new_params,
                     opt_state=opt_state, **pruned,
                     **loss.update(state, loss_grads))
    metrics = dict(metrics, loss=value, learning_rate=schedule(step),
                   grad_norm=optax.global_norm(grads))
    return new_state, metrics

  return step_fn


# ---------------------------------------------------------------- the loop
class _Preemption:
  """SIGTERM (a preempted VM, a cluster scheduler) asks the loop to save and stop."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning('SIGTERM received: saving a checkpoint, then stopping.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def prepare(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Completes and validates a config; fills the class count from the data."""
  config = config_schema.complete(config)
  config_schema.validate(config)
  return config


def _check_finite(pending, last_good_step: int):
  """Raises on the first non-finite loss among the steps run since the last check."""
  if not pending:
    return
  values = jax.device_get([loss for _, loss in pending])
  for (step, _), value in zip(pending, values):
    if not np.isfinite(value):
      raise NonFiniteLossError(
          f'The loss is {value} at step {step}. Training stopped; the last good '
          f'checkpoint (step {last_good_step}) is kept. Lower the learning rate '
          '(config.schedule.base_lr), enable clipping (config.optim.grad_clip_norm) '
          'or check the data.')
  pending.clear()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, float]:
  """Trains (resuming from the workdir's latest checkpoint) and evaluates.

  Everything knowable from the config is checked before the workdir is
  locked; the lock is held until the run ends (see workdir.py for what a
  rerun of an existing workdir does).
  """
  workdir_lib.check_writable_path(workdir)
  config = prepare(config)
  sharding.initialize_distributed(config)
  mesh = sharding.make_mesh(config.mesh)
  info = data.validate_config(config, mesh)
  init_params = None   # a student built from the teacher's weights
  if student_init.active(config.student_init):
    config, init_params = _student_from_teacher(config, mesh)
  if (families.of(config.model).class_head and
      config.model.num_classes != info.num_classes):
    logging.info('config.model.num_classes=%s -> %d (from %s).',
                 config.model.num_classes, info.num_classes, config.dataset)
    config.model.num_classes = info.num_classes
  config_schema.validate_data(config, info)
  # Everything above only reads; from here the workdir is this run's (the
  # lock goes, and a workdir it created and left empty with it, on any exit).
  with workdir_lib.lock(workdir):
    return _train(config, workdir, mesh, info, init_params)


def _train(config, workdir, mesh, info, init_params=None) -> Dict[str, float]:
  module = build_student(config)
  teacher = load_teacher(config, mesh)
  tx, schedule = optim.make_optimizer(config)
  loss_tx = _loss_optimizer(config)
  train_iter_first = data.make_train_iterator(config, mesh, start_step=0)
  example = jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype),
                         next(train_iter_first))
  del train_iter_first
  _check_image_size(config, example)

  init_fn = make_init_fn(config, module, teacher, tx, loss_tx, example)
  abstract = jax.eval_shape(init_fn, jax.random.key(config.seed))
  state_shardings = sharding.param_shardings(abstract, mesh, config.sharding_rules)
  workdir_lib.check_identity(workdir, config.model, abstract['params'],
                             record=False)   # another model: its own message
  changes = workdir_lib.check_resume(workdir, config)

  def fresh_state():
    state = jax.jit(init_fn, out_shardings=state_shardings)(
        jax.random.key(config.seed))
    if init_params is not None:
      state = dict(state, params=jax.device_put(init_params,
                                                state_shardings['params']))
    elif config.init_from:
      state = _init_from_checkpoint(config, state, state_shardings)
    return state
  # A new run reads `init_from` before writing anything, so a checkpoint that
  # does not fit leaves no half-made workdir behind.
  state = None if workdir_lib.has_checkpoints(workdir) else fresh_state()
  workdir_lib.check_identity(workdir, config.model, abstract['params'])
  manager = workdir_lib.make_manager(workdir, config.keep_checkpoints,
                                     config.best_metric)
  restored, _ = workdir_lib.restore_latest(manager, jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      abstract, state_shardings),
      fresh_state=fresh_state if config.resume_with_changes else None)
  if restored is not None:
    state = restored
  elif state is None:   # every checkpoint was unreadable
    state = fresh_state()
  start_step = int(jax.device_get(state['step']))
  if start_step > config.total_steps:
    raise ValueError(f'{workdir} is at step {start_step}, past config.total_steps='
                     f'{config.total_steps}: raise total_steps to train on, or '
                     'use a new --workdir.')
  if changes:
    logging.warning('resume_with_changes: continuing from step %d under %s.',
                    start_step, ', '.join(f'{k}={new!r} (was {old!r})'
                                          for k, old, new in changes))
  workdir_lib.record_config(workdir, config, start_step, replaced=bool(changes))

  batch_sharding = data.batch_sharding(mesh)
  teacher_params = teacher.params if teacher else {}
  teacher_shardings = jax.tree.map(lambda x: x.sharding, teacher_params)
  step_fn = jax.jit(
      make_train_step(config, module, teacher, tx, loss_tx, schedule),
      in_shardings=(state_shardings, batch_sharding, teacher_shardings),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))
  run_eval = evaluation.EVAL_KINDS.get(families.of(config.model).eval_kind)(
      config, mesh, module, info)

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
  progress = periodic_actions.ReportProgress(
      num_train_steps=config.total_steps, writer=writer,
      every_steps=config.log_every)
  meta = {'model': config.model.name, 'dataset': config.dataset}
  eval_metrics: Dict[str, float] = {}
  train_scalars: Dict[str, float] = {}   # the last logged ones
  last_saved = start_step
  pending = []  # (step, device loss) not yet checked for NaN/Inf
  train_iter = data.make_train_iterator(config, mesh, start_step=start_step)
  logging.info('Training %s on %s from step %d to %d.', config.model.name,
               config.dataset, start_step, config.total_steps)
  window_start, window_steps = time.time(), 0

  with _Preemption() as preemption, _saves_settled(manager):
    for step in range(start_step + 1, config.total_steps + 1):
      batch = _next_batch(train_iter, step, last_saved, config)
      state, metrics = step_fn(state, batch, teacher_params)
      pending.append((step, metrics['loss']))
      progress(step)
      window_steps += 1
      is_last = step == config.total_steps
      if step % config.log_every == 0 or is_last:
        _check_finite(pending, last_saved)
        seconds = time.time() - window_start
        scalars = {f'train/{k}': float(v) for k, v in jax.device_get(metrics).items()}
        scalars['train/img_per_s'] = window_steps * config.batch_size / seconds
        writer.write_scalars(step, scalars)
        train_scalars = scalars
        window_start, window_steps = time.time(), 0
      save_metrics = None
      if step % config.eval_every == 0 or is_last:
        eval_metrics = run_eval(pruning.masked_params(state))
        writer.write_scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
        logging.info('Step %d: eval accuracy %.4f over %d examples.', step,
                     eval_metrics['accuracy'], eval_metrics['examples'])
        save_metrics = {k: eval_metrics[k] for k in config_schema.BEST_METRICS
                        if k in eval_metrics}
      if step % config.checkpoint_every == 0 or is_last or preemption.requested:
        _check_finite(pending, last_saved)
        workdir_lib.save(manager, step, state, dict(meta, step=step),
                         metrics=save_metrics, force=True)
        last_saved = step
      if preemption.requested:
        manager.wait_until_finished()
        logging.warning('Stopped at step %d after SIGTERM; rerun to resume.', step)
        break
  manager.wait_until_finished()
  writer.flush()
  final_step = int(jax.device_get(state['step']))
  if not eval_metrics and final_step == config.total_steps:
    # Resumed from the last checkpoint (killed before the model was saved):
    # no step ran here, so evaluate what is saved.
    eval_metrics = run_eval(pruning.masked_params(state))
  if final_step == config.total_steps:  # on every process: saving is collective
    _save_final_model(config, workdir, state, eval_metrics, info)
  result = dict(eval_metrics, step=final_step)
  if 'train/loss' in train_scalars:
    result['train_loss'] = train_scalars['train/loss']
  return result


def _next_batch(train_iter, step: int, last_saved: int, config):
  """The next batch; data that fails to read or decode stops the run cleanly,
  naming the files (of an image folder) that do not decode."""
  try:
    return next(train_iter)
  except tf.errors.OpError as e:
    source = data.get_source(config.dataset, config.data_dir)
    bad = source.undecodable(config.train_split)
    files = (f'; files that do not decode: {", ".join(bad[:5])}'
             f'{" ..." if len(bad) > 5 else ""}' if bad else '')
    raise ValueError(
        f'Reading the training data failed at step {step} ('
        f'{" ".join(e.message.split())[:200]}){files}. Training stopped; the '
        f'last checkpoint (step {last_saved}) is kept. Remove or replace the '
        'bad file, then rerun to resume.') from None


@contextlib.contextmanager
def _saves_settled(manager):
  """An exception or Ctrl-C in the loop first lets the save in flight finish
  (orbax renames a step into place only once complete), so the newest
  complete checkpoint is always on disk when the run stops."""
  try:
    yield
  except BaseException:
    logging.warning('Stopping: waiting for the checkpoint being written.')
    try:
      manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('The checkpoint in flight was abandoned (%s); the one '
                      'before it is kept.', e)
    raise


def inference_section(config, info) -> Dict[str, Any]:
  """What using the model needs besides its weights: the eval preprocessing
  and the label names (predict.py reads them), and the data it was trained
  and scored on (export and export_optimized score on it). Kept in the saved model
  config, so every artifact made from it (shrunk, quantized, exported npz)
  carries them too."""
  return {'pp_eval': config.pp_eval, 'dataset': config.dataset,
          'data_dir': config.get('data_dir'), 'train_split': config.train_split,
          'eval_split': config.get('eval_split'),
          'class_names': tuple(info.class_names or ())}


def _save_final_model(config, workdir, state, eval_metrics, info):
  """The trained model as an artifact with its config: what later stages read."""
  import os  # pylint: disable=g-import-not-at-top
  # Global arrays, possibly split between processes: orbax writes each
  # process's shards, process 0 the JSON files.
  params = pruning.masked_params(state)
  extra = {'eval': eval_metrics, 'steps': config.total_steps}
  if 'masks' in state:
    extra['sparsity'] = pruning.sparsity(
        _to_host(state['masks']), params)
  model_config = ml_collections.ConfigDict(config.model.to_dict(), type_safe=False)
  model_config.inference = inference_section(config, info)
  checkpoint_files.save_model(os.path.join(workdir, checkpoint_files.MODEL_SUBDIR), params,
                        model_config, extra=extra, overwrite=True)


def _to_host(tree):
  """Numpy copies of (possibly multi-process, sharded) arrays, on every process."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x)  # gathers the global value
    return np.asarray(jax.device_get(x))
  return jax.tree.map(fetch, tree)


def _require_exists(path: str, key: str) -> None:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{key}={path!r} does not exist: give a vit_jax / big_vision .npz file '
        'or a directory written by training (workdir/model); gs:// paths work.')


def _model_path(path: str, key: str) -> str:
  """An .npz file, a saved model directory, or a workdir root (its model/)."""
  _require_exists(path, key)
  if tf.io.gfile.isdir(path):
    return workdir_lib.resolve_model_dir(path, key)
  return path


def _init_from_checkpoint(config, state, state_shardings):
  """Starts the student from a pretrained checkpoint (posemb resized, head reset)."""
  path = _model_path(config.init_from, 'config.init_from')
  params = _to_host(state['params'])  # on every process
  loaded = checkpoint_files.load_pretrained(path, config.model, params,
                                      into=config.init_into)
  state = dict(state)
  state['params'] = jax.device_put(loaded, state_shardings['params'])
  logging.info('Initialised from %s.', config.init_from)
  return state


def _student_from_teacher(config, mesh):
  """`config.student_init`: the model config and first parameters, taken from
  the init_from teacher (`compress.student_init`); config.model is replaced."""
  _require_exists(config.init_from, 'config.init_from')
  if not checkpoint_files.find_model_dir(config.init_from):  # a workdir: its model/
    raise ValueError(f'config.init_from={config.init_from!r} is not a saved model '
                     'directory (workdir/model); config.student_init needs the '
                     "teacher's model config that one carries.")
  teacher_config, teacher_params = checkpoint_files.load_model(
      checkpoint_files.find_model_dir(config.init_from))
  spec = config.student_init
  scores = None
  if spec.criterion == 'taylor':
    config.model = teacher_config   # its batches: the teacher reads them
    batches = data.make_train_iterator(config, mesh, start_step=0)
    scores = student_init.taylor_scores(
        teacher_config, teacher_params,
        (next(batches) for _ in range(spec.taylor_batches)))
  params, config.model = student_init.init_student(teacher_params, teacher_config,
                                                   spec, scores)
  logging.info('Student from %s: %s, %d parameters.', config.init_from,
               student_init.describe(config.model), models.count_params(params))
  return config, params


def _check_image_size(config, example):
  size = config.model.image_size
  image = example['image']
  if image.shape[1] != size or image.shape[2] != size:
    raise ValueError(
        f'The pp string makes {image.shape[1]}x{image.shape[2]} images but '
        f'config.model.image_size is {size}: make them agree (e.g. resize({size}) '
        'in config.pp_train and config.pp_eval).')
  if image.shape[-1] != 3:
    raise ValueError(f'Images have {image.shape[-1]} channels; the models take 3: '
                     'add to_rgb to the pp strings.')


def _flat_hparams(config) -> Dict[str, Any]:
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(f'{prefix}{k}.', v)
      elif isinstance(v, (int, float, str, bool)):
        flat[f'{prefix}{k}'] = v
  walk('', config)
  return flat
