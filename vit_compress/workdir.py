"""A training run's workdir: orbax checkpoints that resume, and guards on whose they are.

    workdir/
      LOCK                the running process (pid, host) while a run holds it
      experiment_config.json  the full experiment config of the run (rewritten
                          on every start, after the checks pass)
      experiment_config.step_<N>.json  the config a `resume_with_changes`
                          start replaced at step N
      model_config.json   the model the checkpoints belong to (written once)
      param_shapes.json   its parameter shapes: the identity a restart checks
      checkpoints/<step>/ orbax: 'state' (the whole train state) + 'meta' (JSON)
      unreadable_checkpoints/<step>/  any whose files failed to read, set aside

Invariants: one run at a time holds a workdir (`lock`). A restart whose config
differs from the recorded one in any key outside `SAFE_ON_RESUME` is refused
before anything is written (`check_resume`), unless it opts in with
`config.resume_with_changes`. A checkpoint is set aside only when its files
cannot be read; one that holds another train-state *structure* is never
touched (`restore_latest`). Saves are asynchronous (orbax copies device arrays
to host before `save` returns, so the next step may donate them). The latest
`keep` checkpoints are kept, plus the best one by an eval metric.
"""
import contextlib
import json
import os
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from vit_compress import param_paths

MODEL_CONFIG_FILE = 'model_config.json'
SHAPES_FILE = 'param_shapes.json'
EXPERIMENT_FILE = 'experiment_config.json'
LOCK_FILE = 'LOCK'

# Config keys (and sections, by their dotted prefix) a rerun may change and
# still resume as the same run: they decide how long it runs, how often it
# logs, evaluates and saves, where the data is read from and how fast, but not
# the train state or the training trajectory up to the saved step.
SAFE_ON_RESUME = (
    'total_steps', 'log_every', 'eval_every', 'checkpoint_every',
    'keep_checkpoints', 'data_dir', 'eval_batch_size', 'prefetch', 'cache',
    'distributed', 'resume_with_changes')


class WorkdirMismatchError(ValueError):
  """The workdir already holds checkpoints of a different model."""


class ConfigChangedError(ValueError):
  """A rerun of a workdir changed keys that are not safe to change on resume."""


class WorkdirLockedError(ValueError):
  """Another live process holds the workdir."""


class StateStructureError(ValueError):
  """A readable checkpoint holds another train-state structure than the config makes."""


# ------------------------------------------------------------- one run at a time
def check_writable_path(workdir: str) -> None:
  """A workdir that can never be written fails here, before any work."""
  if not workdir:
    raise ValueError('--workdir is empty: give the directory for checkpoints, '
                     'logs and the model, e.g. --workdir=/tmp/run.')
  if '://' in workdir:
    return
  node = os.path.abspath(workdir)
  while not os.path.exists(node):
    node = os.path.dirname(node)
  if not os.path.isdir(node):
    raise ValueError(f'--workdir={workdir!r}: {node} is a file, not a directory. '
                     'Give a new or existing directory.')
  if not os.access(node, os.W_OK | os.X_OK):
    raise ValueError(f'--workdir={workdir!r}: {node} is not writable by this '
                     'user. Give a directory you can write to.')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # alive, another user's
    return True
  return True


def _create_exclusive(path: str, text: str) -> bool:
  """Creates `path` holding `text` unless it exists (atomic on local disks)."""
  if '://' in path:   # object stores: check-then-write, not atomic
    if tf.io.gfile.exists(path):
      return False
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write(text)
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  return True


def _read_holder(path: str) -> Dict[str, Any]:
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (ValueError, tf.errors.OpError):   # half-written or gone
    return {}


@contextlib.contextmanager
def lock(workdir: str):
  """Holds `workdir/LOCK` (pid, host, start time) while the block runs.

  Taken before the run writes anything else; a second run is refused with the
  holder's name. A lock left by a dead process on this host is taken over
  with a warning. A workdir this created and left empty is removed again, so
  a refused fresh run leaves nothing behind.
  """
  if jax.process_index() != 0:   # process 0 holds it for the whole run
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  created = not tf.io.gfile.exists(workdir)
  tf.io.gfile.makedirs(workdir)
  me = {'pid': os.getpid(), 'host': socket.gethostname(),
        'since': time.strftime('%Y-%m-%d %H:%M:%S')}
  try:
    while not _create_exclusive(path, json.dumps(me)):
      holder = _read_holder(path)
      pid, host = holder.get('pid'), holder.get('host', '?')
      if (host == me['host'] and isinstance(pid, int) and pid != me['pid']
          and not _pid_alive(pid)):
        logging.warning('%s was left by process %d on %s, which is gone: taking '
                        'the workdir over.', path, pid, host)
        tf.io.gfile.remove(path)
        continue
      raise WorkdirLockedError(
          f'{workdir} is in use by process {pid} on {host} (since '
          f'{holder.get("since", "?")}): wait for that run to finish, or use '
          f'another --workdir. If that process is gone, delete {path}.')
  except BaseException:
    if created and not tf.io.gfile.listdir(workdir):
      tf.io.gfile.rmtree(workdir)
    raise
  try:
    yield
  finally:
    if _read_holder(path).get('pid') == me['pid']:
      tf.io.gfile.remove(path)
    if created and not tf.io.gfile.listdir(workdir):
      tf.io.gfile.rmtree(workdir)


# ------------------------------------------------------------- the recorded config
def _flat_config(config) -> Dict[str, Any]:
  """{dotted key: JSON value} of a config (tuples and lists compare equal)."""
  flat = {}

  def walk(prefix, node):
    if isinstance(node, dict) and node:
      for k, v in node.items():
        walk(f'{prefix}{k}.', v)
    else:
      flat[prefix[:-1]] = node
  walk('', json.loads(config.to_json()) if hasattr(config, 'to_json') else config)
  return flat


def _is_safe(key: str) -> bool:
  return any(key == s or key.startswith(s + '.') for s in SAFE_ON_RESUME)


def _read_recorded(workdir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(workdir, EXPERIMENT_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def config_changes(workdir: str, config) -> List[Tuple[str, Any, Any]]:
  """(key, recorded, new) for every key outside SAFE_ON_RESUME that differs."""
  recorded = _read_recorded(workdir)
  if recorded is None:
    return []
  old, new = _flat_config(recorded), _flat_config(config)
  return [(k, old.get(k, '<unset>'), new.get(k, '<unset>'))
          for k in sorted(set(old) | set(new))
          if not _is_safe(k) and old.get(k, '<unset>') != new.get(k, '<unset>')]


def check_resume(workdir: str, config) -> List[Tuple[str, Any, Any]]:
  """Refuses (writing nothing) a rerun whose config changed unsafe keys, unless
  `config.resume_with_changes`; returns the changes it lets through."""
  if not has_checkpoints(workdir):
    return []
  changes = config_changes(workdir, config)
  if changes and not config.get('resume_with_changes', False):
    shown = '; '.join(f'{k}: {old!r} -> {new!r}' for k, old, new in changes[:8])
    more = f' (and {len(changes) - 8} more)' if len(changes) > 8 else ''
    raise ConfigChangedError(
        f'{workdir} holds a run made with another config: {shown}{more}. '
        'Nothing was written. Keys safe to change on resume: '
        f'{", ".join(SAFE_ON_RESUME)}. Either use a new --workdir, or rerun '
        'with --resume_with_changes (config.resume_with_changes=True) to '
        'continue from the latest checkpoint under the new settings '
        '(parameters and step are restored; what no longer fits is '
        're-initialised and logged).')
  return changes


def record_config(workdir: str, config, step: int = 0,
                  replaced: bool = False) -> None:
  """Writes the run's config; with `replaced`, keeps the previous one beside it."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, EXPERIMENT_FILE)
  if replaced and tf.io.gfile.exists(path):
    tf.io.gfile.copy(path, os.path.join(workdir, f'experiment_config.step_{step}.json'),
                     overwrite=True)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(config.to_json(indent=1))


# ------------------------------------------------------------- model paths
def resolve_model_dir(path: str, key: str) -> str:
  """A saved model directory for `key`: `path` itself, or `path/model` when
  `path` is a training workdir (`artifact.resolve`, the one home of this rule)."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  return artifact.resolve(path, key)


def _shapes(params) -> Dict[str, list]:
  return {p: list(np.shape(x)) for p, x in param_paths.flatten_with_paths(params)}


def check_identity(workdir: str, model_config: ml_collections.ConfigDict,
                   param_shapes, record: bool = True) -> None:
  """Fails (before anything is written) if the workdir belongs to another model;
  records this model's identity on first use (with `record`)."""
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
  if record and jax.process_index() == 0:
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


def _saved_leaves(manager: ocp.CheckpointManager, step: int) -> Dict[str, Any]:
  """{path: ArrayMetadata} of a checkpoint's state, read from its metadata."""
  directory = os.path.join(str(manager.directory), str(step), 'state')
  metadata = ocp.StandardCheckpointer().metadata(directory)
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  leaves = dict(param_paths.flatten_with_paths(tree))
  if not leaves:
    raise ValueError('its state metadata lists no arrays')
  return leaves


def _fits(saved, want) -> bool:
  return (tuple(saved.shape) == tuple(want.shape)
          and np.dtype(saved.dtype) == np.dtype(want.dtype))


def _structure_diff(saved: Dict[str, Any], abstract_state) -> List[str]:
  """Paths where a checkpoint and the state the config makes disagree."""
  want = dict(param_paths.flatten_with_paths(abstract_state))
  return sorted(p for p in set(saved) | set(want)
                if p not in saved or p not in want or not _fits(saved[p], want[p]))


def _restore(manager, step, state_args):
  return manager.restore(step, args=ocp.args.Composite(
      state=state_args, meta=ocp.args.JsonRestore()))


def restore_latest(manager: ocp.CheckpointManager, abstract_state,
                   fresh_state: Optional[Callable[[], Any]] = None):
  """(state, meta) of the newest readable checkpoint, or (None, None).

  A checkpoint whose files cannot be read (a crash mid-write on a filesystem
  without atomic renames, a corrupted file) is moved aside with a warning,
  falling back to the one before it. A readable one that holds another
  structure (another optimiser, pruning state, ...) is left where it is: an
  error, unless `fresh_state` is given (the `resume_with_changes` opt-in),
  which makes the state from what fits (same path, shape and dtype) and
  takes the rest from `fresh_state()`, logging what was re-initialised.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      saved = _saved_leaves(manager, step)
      differing = _structure_diff(saved, abstract_state)
      if not differing:
        restored = _restore(manager, step, ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      moved_to = _set_aside(manager, step)
      logging.warning('Checkpoint at step %d is unreadable (%s: %s); moved to '
                      '%s, trying the previous one.', step, type(e).__name__, e,
                      moved_to)
      continue
    if differing and fresh_state is None:
      raise StateStructureError(
          f'The checkpoint at step {step} in {manager.directory} holds another '
          f'train state than this config makes ({len(differing)} arrays differ, '
          f'e.g. {", ".join(differing[:3])}); it was left as it is. Use a new '
          '--workdir, or rerun with --resume_with_changes to restore what fits.')
    if differing:
      return _restore_what_fits(manager, step, saved, abstract_state,
                                fresh_state())
    logging.info('Resuming from the checkpoint at step %d.', step)
    return restored['state'], restored['meta']
  return None, None


def _restore_what_fits(manager, step, saved, abstract_state, fresh):
  """The checkpoint's arrays where they fit the new state, `fresh`'s elsewhere."""
  want = dict(param_paths.flatten_with_paths(abstract_state))
  kept = {p: w for p, w in want.items() if p in saved and _fits(saved[p], w)}
  restored = _restore(manager, step, ocp.args.StandardRestore())
  loaded = dict(param_paths.flatten_with_paths(restored['state']))
  fresh_leaves = dict(param_paths.flatten_with_paths(fresh))
  leaves = {p: (jax.device_put(loaded[p], want[p].sharding) if p in kept
                else fresh_leaves[p]) for p in want}
  state = param_paths.tree_from_flat(leaves, like=abstract_state)
  new = sorted(set(want) - set(kept))
  dropped = sorted(set(saved) - set(kept))
  groups = sorted({p.split('/')[0] for p in new})
  logging.warning(
      'resume_with_changes: restored %d of %d arrays from step %d; '
      're-initialised %d (%s%s); dropped %d saved arrays the new state has no '
      'place for.', len(kept), len(want), step, len(new), ', '.join(groups),
      f', e.g. {new[0]}' if new else '', len(dropped))
  return state, restored['meta']
