"""Device mesh, parameter partition rules, and multi-host start-up.

A mesh config is a list of (axis name, size) pairs, e.g. `[('data', -1)]`
(pure data parallelism) or `[('data', 4), ('model', 2)]`; -1 takes the
remaining devices. Batches are split over every axis except 'model'; this
module alone owns that batch layout (`batch_sharding`, `check_batch_size`,
`local_rows`: which rows of a global batch each process holds), and the
input pipeline (data/pipeline.py) calls it.

Partition rules are (regex over '/'-joined parameter path, spec) pairs where
the spec is a tuple with one entry per array dimension (an axis name, a
tuple of axis names, or None); the first matching rule wins and a parameter
no rule matches is replicated. Presets by name, combinable with '+' or in a
list with explicit rules:

  'replicated'       every parameter on every device;
  'tensor_parallel'  Megatron-style: attention query/key/value split over
                     heads, `out` over heads, MLP Dense_0 over its output
                     units and Dense_1 over its input units, on 'model';
  'fsdp'             additionally shards each parameter's largest dimension
                     that divides evenly (and is not already sharded) over
                     'data' -- ZeRO-3-style, composable with the above.

A dimension that its axes do not divide falls back to replicated (logged)
instead of failing, so a pruned model with odd head counts still runs.
`state_shardings` shards optimiser state like the parameters it mirrors.
"""
import collections
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np

from vit_compress import config_sections
from vit_compress import param_paths
from vit_compress.registry import unknown_name_message

MODEL_AXIS = 'model'
DATA_AXIS = 'data'
Spec = Tuple[Any, ...]
Rule = Tuple[str, Spec]

_ATTENTION = r'MultiHeadDotProductAttention_\d+'
_MLP = r'(MlpBlock_\d+|token_mixing|channel_mixing)'

# Megatron-style: each block's first matmuls are column-split, the second
# row-split, so a block needs one all-reduce on its output and no other
# communication. Biases follow the dimension they are added to.
TENSOR_PARALLEL_RULES: List[Rule] = [
    (rf'{_ATTENTION}/(query|key|value)/kernel$', (None, MODEL_AXIS, None)),
    (rf'{_ATTENTION}/(query|key|value)/bias$', (MODEL_AXIS, None)),
    (rf'{_ATTENTION}/out/kernel$', (MODEL_AXIS, None, None)),
    (rf'{_ATTENTION}/out/bias$', ()),
    (rf'{_MLP}/Dense_0/kernel$', (None, MODEL_AXIS)),
    (rf'{_MLP}/Dense_0/bias$', (MODEL_AXIS,)),
    (rf'{_MLP}/Dense_1/kernel$', (MODEL_AXIS, None)),
    (rf'{_MLP}/Dense_1/bias$', ()),
]

PRESETS: Dict[str, List[Rule]] = {
    'replicated': [('.*', ())],
    'tensor_parallel': TENSOR_PARALLEL_RULES,
    'fsdp': [],  # a flag, applied after the rules; see _fsdp
}


# ---------------------------------------------------------------- mesh

def _mesh_axes(mesh_config) -> List[Tuple[str, int]]:
  if isinstance(mesh_config, (dict, ml_collections.ConfigDict)):
    mesh_config = list(mesh_config.items())
  axes = []
  for item in mesh_config or ():
    if len(item) != 2:
      raise ValueError(f"config.mesh entries are (axis name, size) pairs like ('data', -1), "
                       f'got {item!r}.')
    axes.append((str(item[0]), int(item[1])))
  if not axes:
    raise ValueError("config.mesh is empty; use e.g. [('data', -1)].")
  names = [n for n, _ in axes]
  if len(set(names)) != len(names):
    raise ValueError(f'config.mesh repeats an axis name: {names}.')
  return axes


def make_mesh(mesh_config, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A Mesh from [(axis name, size)], size -1 meaning "the remaining devices"."""
  devices = list(jax.devices() if devices is None else devices)
  axes = _mesh_axes(mesh_config)
  sizes = [s for _, s in axes]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh sizes must be positive, with at most one -1; got {axes}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'config.mesh {axes}: {len(devices)} devices cannot be split '
                       f'into groups of {known}. {_describe(devices)}')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f'config.mesh {axes} needs {math.prod(sizes)} devices but there '
                     f'are {len(devices)}; use -1 for one axis to take the rest. '
                     f'{_describe(devices)}')
  try:  # topology-aware order (ICI rings on TPU, NVLink islands on GPU)
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices, dtype=object).reshape(sizes)
  # Mesh() gives 'Auto' axes: jit propagates shardings from in/out specs.
  return Mesh(grid, tuple(n for n, _ in axes))


def _describe(devices) -> str:
  kinds = sorted({f'{d.platform}:{getattr(d, "device_kind", "?")}' for d in devices})
  return (f'Devices available: {len(devices)} ({", ".join(kinds)}) over '
          f'{jax.process_count()} process(es).')


def default_mesh() -> Mesh:
  """All devices on one 'data' axis."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def data_axes(mesh: Mesh) -> Tuple[str, ...]:
  """The axes a batch is split over: all but 'model'."""
  return tuple(n for n in mesh.axis_names if n != MODEL_AXIS)


def batch_sharding(mesh: Optional[Mesh] = None,
                   batch_axes: Optional[Sequence[str]] = None) -> NamedSharding:
  """Leading (batch) dimension split over `batch_axes` of `mesh`.

  mesh defaults to `default_mesh()`; batch_axes to `data_axes(mesh)`, so the
  batch is replicated along the tensor-parallel axis.
  """
  mesh = default_mesh() if mesh is None else mesh
  axes = data_axes(mesh) if batch_axes is None else tuple(batch_axes)
  unknown = [a for a in axes if a not in mesh.axis_names]
  if unknown:
    raise ValueError(f'batch_axes {unknown} are not axes of the mesh '
                     f'{mesh.axis_names}.')
  return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _batch_axes(layout: Union[Mesh, NamedSharding]) -> Tuple[Any, Tuple[str, ...]]:
  """(mesh, batch axes) of a mesh (its data_axes) or of a batch sharding."""
  if not isinstance(layout, NamedSharding):
    return layout, data_axes(layout)
  spec = layout.spec[0] if layout.spec else None
  return layout.mesh, (spec,) if isinstance(spec, str) else tuple(spec or ())


def check_batch_size(batch_size, layout: Union[Mesh, NamedSharding],
                     what: str = 'config.batch_size') -> None:
  """Errors early when a global batch cannot be split evenly over the
  processes and over the devices along its batch axes.

  layout: a mesh (the batch split over `data_axes`) or a `batch_sharding`.
  """
  mesh, axes = _batch_axes(layout)
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f'{what} must be a positive integer, got {batch_size!r}.')
  devices = math.prod(mesh.shape[a] for a in axes)
  processes = jax.process_count()
  for count, where in (
      (devices, f'{devices} devices along mesh axes {axes} of mesh {dict(mesh.shape)}'),
      (processes, f'{processes} processes')):
    if batch_size % count:
      fix = count * max(1, round(batch_size / count))
      raise ValueError(f'{what}={batch_size} is not divisible by the {where}: the '
                       f'global batch must split evenly; use e.g. {fix} (a '
                       f'multiple of {count}).')


def local_rows(sharding: jax.sharding.Sharding,
               global_batch: int) -> Tuple[int, ...]:
  """Rows of the global batch that this process's devices hold, ascending.

  Ascending is the order `jax.make_array_from_process_local_data` reads a
  process's local batch in (distinct device shards by their first row).
  Processes whose devices hold the same rows are replicas and build the
  same local batches.
  """
  rows = collections.defaultdict(set)
  for device, index in sharding.devices_indices_map((global_batch,)).items():
    start, stop, _ = index[0].indices(global_batch)
    rows[device.process_index].update(range(start, stop))
  sizes = {len(r) for r in rows.values()}
  if len(sizes) != 1:
    raise ValueError(f'Cannot split a batch of {global_batch} evenly between '
                     f'the processes of {sharding}.')
  return tuple(sorted(rows[jax.process_index()]))


# ---------------------------------------------------------------- rules

RulesLike = Union[str, Sequence[Union[str, Rule]]]


def resolve_rules(rules: RulesLike) -> Tuple[List[Rule], bool]:
  """(explicit rules in order, whether fsdp applies) from presets and/or pairs."""
  if isinstance(rules, str):
    rules = [r for r in rules.split('+') if r]
  out, fsdp = [], False
  for rule in rules:
    if isinstance(rule, str):
      if rule not in PRESETS:
        raise ValueError(unknown_name_message('sharding preset', rule, PRESETS))
      fsdp |= rule == 'fsdp'
      out += PRESETS[rule]
    elif len(rule) == 2:  # lists from configs become the tuples PartitionSpec wants
      out.append((str(rule[0]), tuple(
          tuple(e) if isinstance(e, list) else e for e in rule[1])))
    else:
      raise ValueError(f'A partition rule is (regex, spec tuple) or a preset name, got {rule!r}.')
  return out, fsdp


def _axis_size(mesh: Mesh, entry) -> int:
  names = entry if isinstance(entry, tuple) else (entry,)
  for n in names:
    if n not in mesh.shape:
      raise ValueError(f'Partition rule uses mesh axis {n!r}, but the mesh has '
                       f'{tuple(mesh.axis_names)}; add it to config.mesh '
                       f"(e.g. ('{n}', 2)) or drop the rule.")
  return math.prod(mesh.shape[n] for n in names)


def _fsdp(spec: List[Any], shape: Tuple[int, ...], mesh: Mesh) -> List[Any]:
  """Adds 'data' on the largest free dimension that it divides."""
  if DATA_AXIS not in mesh.shape or any(
      DATA_AXIS in (e if isinstance(e, tuple) else (e,)) for e in spec):
    return spec
  size = mesh.shape[DATA_AXIS]
  free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % size == 0]
  if free and size > 1:
    spec[max(free, key=lambda d: shape[d])] = DATA_AXIS
  return spec


def spec_for(path: str, shape: Tuple[int, ...], mesh: Mesh,
             compiled: Sequence[Tuple[Any, Spec]], fsdp: bool) -> PartitionSpec:
  """The PartitionSpec for one parameter."""
  spec = param_paths.first_match(path, compiled, ())
  if len(spec) > len(shape):
    raise ValueError(f'Partition spec {spec} for {path!r} has {len(spec)} entries but '
                     f'the parameter has shape {shape}; fix the rule that matches it.')
  spec = list(spec) + [None] * (len(shape) - len(spec))
  for d, entry in enumerate(spec):
    if entry is not None and shape[d] % _axis_size(mesh, entry):
      logging.warning('Replicating dim %d of %s %s: %d is not divisible by %s (size %d).',
                   d, path, shape, shape[d], entry, _axis_size(mesh, entry))
      spec[d] = None
  if fsdp:
    spec = _fsdp(spec, shape, mesh)
  while spec and spec[-1] is None:  # P('model', None) == P('model'); keep them short
    spec.pop()
  return PartitionSpec(*spec)


def param_specs(params_or_shapes, mesh: Mesh, rules: RulesLike = 'replicated'):
  """A pytree of PartitionSpecs (works on arrays or ShapeDtypeStructs)."""
  explicit, fsdp = resolve_rules(rules)
  compiled = [(param_paths.compile_regex(r, 'partition rule'), s) for r, s in explicit]
  return param_paths.map_with_paths(
      lambda path, x: spec_for(path, tuple(x.shape), mesh, compiled, fsdp),
      params_or_shapes)


def param_shardings(params_or_shapes, mesh: Mesh, rules: RulesLike = 'replicated'):
  """A pytree of NamedShardings, for jit's in/out_shardings or device_put."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      param_specs(params_or_shapes, mesh, rules),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def state_shardings(state_shapes, params_shapes, mesh: Mesh,
                    rules: RulesLike = 'replicated'):
  """NamedShardings for a tree that mirrors the parameters (optimiser state).

  A leaf whose path ends with a parameter's path and has that parameter's
  shape (Adam's mu/nu, momentum) is sharded like the parameter; anything
  else (step counts) is replicated. Works on `jax.eval_shape(tx.init, params)`
  whatever optax nests above the parameter tree, and with '^'-anchored rules.
  """
  specs = param_paths.flatten_with_paths(param_specs(params_shapes, mesh, rules))
  shapes = dict(param_paths.flatten_with_paths(params_shapes))
  by_path = {path: (tuple(shapes[path].shape), spec) for path, spec in specs}

  def spec_of(path, leaf):
    parts = path.split('/')
    for start in range(len(parts)):  # longest suffix first
      shape_spec = by_path.get('/'.join(parts[start:]))
      if shape_spec and shape_spec[0] == tuple(leaf.shape):
        return NamedSharding(mesh, shape_spec[1])
    return NamedSharding(mesh, PartitionSpec())
  return param_paths.map_with_paths(spec_of, state_shapes)


# ---------------------------------------------------------------- multi-host

def default_distributed_config() -> ml_collections.ConfigDict:
  """`config.distributed`: how (and whether) processes find each other."""
  return ml_collections.ConfigDict({
      'enabled': False,            # False: a single process
      # '' lets jax detect the cluster (TPU pods, SLURM, Open MPI); otherwise
      # 'host:port' of process 0, with num_processes and process_id.
      'coordinator_address': '',
      'num_processes': 1,
      'process_id': 0,
  })


config_sections.register('distributed', default_distributed_config)


def initialize_distributed(config) -> bool:
  """Starts jax.distributed when `config.distributed` asks; True if it did.

  Must run before anything touches a jax device (jax.devices(), any array).
  `config.distributed` is a completed section (`config_schema.complete`, or
  `config_sections.complete_section('distributed', partial)`); no config at
  all is a single process.
  """
  if config is None:
    return False
  cfg = config.get('distributed')
  if not cfg.enabled:
    return False
  if jax.distributed.is_initialized():
    logging.info('jax.distributed is already initialised; not starting it again.')
    return True
  # CPU hosts exchange collectives over gloo (the other choice, MPI, needs a
  # library most machines lack); accelerator collectives are unaffected.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if not cfg.coordinator_address:
    jax.distributed.initialize()  # cluster auto-detection
  else:
    if not 0 <= cfg.process_id < cfg.num_processes:
      raise ValueError(f'config.distributed.process_id={cfg.process_id} must be in '
                       f'[0, num_processes={cfg.num_processes}).')
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes,
                               process_id=cfg.process_id)
  logging.info('Process %d of %d; %d local of %d devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
