"""A training run's workdir: orbax checkpoints that resume, and a guard on whose they are.

    workdir/
      model_config.json   the model the checkpoints belong to (written once)
      param_shapes.json   its parameter shapes: the identity a restart checks
      checkpoints/<step>/ orbax: 'state' (the whole train state) + 'meta' (JSON)
      unreadable_checkpoints/<step>/  any that failed to restore, set aside

Saves are asynchronous (orbax copies device arrays to host before `save`
returns, so the next step may donate them). The latest `keep` checkpoints are
kept, plus the best one by an eval metric. A workdir that holds checkpoints of
another model is never written to: `check_identity` fails first.
"""
import json
import os
from typing import Any, Dict, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from vit_compress import paths

MODEL_CONFIG_FILE = 'model_config.json'
SHAPES_FILE = 'param_shapes.json'


class WorkdirMismatchError(ValueError):
  """The workdir already holds checkpoints of a different model."""


def _shapes(params) -> Dict[str, list]:
  return {p: list(np.shape(x)) for p, x in paths.flatten_with_paths(params)}


def check_identity(workdir: str, model_config: ml_collections.ConfigDict,
                   param_shapes) -> None:
  """Fails (before anything is written) if the workdir belongs to another model;
  records this model's identity on first use."""
  shapes_path = os.path.join(workdir, SHAPES_FILE)
  current = _shapes(param_shapes)
  recorded = tf.io.gfile.exists(shapes_path)
  if jax.process_count() > 1:  # every process looks before process 0 writes
    multihost_utils.sync_global_devices(f'check_identity {workdir}')
  if recorded:
    with tf.io.gfile.GFile(shapes_path) as f:
      saved = json.load(f)
    if saved != current:
      with tf.io.gfile.GFile(os.path.join(workdir, MODEL_CONFIG_FILE)) as f:
        saved_name = json.load(f).get('name', '?')
      differing = sorted(k for k in set(saved) | set(current)
                         if saved.get(k) != current.get(k))
      name = model_config.get('name', '?')
      whose = (f'model {saved_name!r}, not of {name!r}' if saved_name != name
               else f'a {name!r} whose parameters have other shapes than this '
               "config's")
      raise WorkdirMismatchError(
          f'{workdir} holds checkpoints of {whose} (differing: '
          f'{", ".join(differing[:3])}). Nothing was written: use a new '
          '--workdir, or delete this one to start over.')
    return
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, MODEL_CONFIG_FILE), 'w') as f:
      f.write(model_config.to_json(indent=1))
    with tf.io.gfile.GFile(shapes_path, 'w') as f:
      json.dump(current, f)


def has_checkpoints(workdir: str) -> bool:
  """Whether a run saved any step here (readable or not) — without creating
  anything, unlike a CheckpointManager."""
  directory = os.path.join(workdir, 'checkpoints')
  if not tf.io.gfile.isdir(directory):
    return False
  return any(name.rstrip('/').isdigit() for name in tf.io.gfile.listdir(directory))


def make_manager(workdir: str, keep: int = 3, best_metric: Optional[str] = None,
                 best_mode: str = 'max') -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints plus the best by `best_metric`."""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  if best_metric:
    sign = 1.0 if best_mode == 'max' else -1.0
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=lambda m: sign * float(m[best_metric]), n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=True, create=True,
      cleanup_tmp_directories=True)
  directory = os.path.join(workdir, 'checkpoints')
  if '://' not in directory:
    directory = os.path.abspath(directory)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=('state', 'meta'))


def save(manager: ocp.CheckpointManager, step: int, state, meta: Dict[str, Any],
         metrics: Optional[Dict[str, float]] = None, force: bool = False) -> bool:
  saved = manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                       metrics=metrics, force=force)
  if saved:
    logging.info('Saving checkpoint at step %d (asynchronously).', step)
  return saved


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves an unreadable checkpoint out of the way of the run, which will save
  that step again, into workdir/unreadable_checkpoints/ (nothing is deleted)."""
  source = os.path.join(str(manager.directory), str(step))
  target_dir = os.path.join(os.path.dirname(str(manager.directory)),
                            'unreadable_checkpoints')
  target = os.path.join(target_dir, str(step))
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(target_dir)
    suffix = 0
    while tf.io.gfile.exists(target):   # set aside before, by an earlier run
      suffix += 1
      target = os.path.join(target_dir, f'{step}.{suffix}')
    tf.io.gfile.rename(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
  manager.reload()
  return target


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """(state, meta) of the newest readable checkpoint, or (None, None).

  A checkpoint that cannot be read (a crash mid-write on a filesystem without
  atomic renames, a corrupted file) is moved aside with a warning, falling
  back to the one before it.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      moved_to = _set_aside(manager, step)
      logging.warning('Checkpoint at step %d is unreadable (%s: %s); moved to '
                      '%s, trying the previous one.', step, type(e).__name__, e,
                      moved_to)
      continue
    logging.info('Resuming from the checkpoint at step %d.', step)
    return restored['state'], restored['meta']
  return None, None
