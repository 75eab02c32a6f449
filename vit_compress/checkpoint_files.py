"""Checkpoint files: vit_jax / big_vision `.npz` import and export, and saved models.

Users reach all of it as `vit_compress.checkpoint` (vit_jax's name), which adds
`export_optimized` on top; the modules of the package import this one.

Files we read:
- vit_jax `.npz` (AugReg and the original ViT releases): '/'-joined parameter
  paths with pre-Linen names (`encoderblock_i/MultiHeadDotProductAttention_1`,
  `LayerNorm_2`, `MlpBlock_3`) or Linen names; hybrids' GroupNorm scales and
  biases may carry extra singleton axes.
- big_vision `.npz`: Linen names under `params/` (two towers under
  `params/img/` and `params/txt/`); the ViT's `pos_embedding` sits at the
  tower's top level and has no class-token slot; encoder blocks may be stacked
  into one scanned `encoderblock`.
- timm `.safetensors` (MobileViT): PyTorch state dicts, renamed and re-laid
  out by `models.timm_names` (`load_timm`; `load_pretrained` takes them too).
- our saved models (`save_model`): a directory holding the arrays (orbax, in
  `params/`) and the model config that rebuilds them (`model_config.json`).

Importing renames to our names, then fits each array to the model's
parameter: position embeddings are resampled to the model's resolution, a head
whose number of classes differs is re-initialised, singleton axes are dropped.
Whatever cannot be fitted is reported in one error that lists every key.
"""
import io
import json
import math
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import logging
from flax.training import checkpoints as flax_checkpoints
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import scipy.ndimage
import tensorflow as tf

from vit_compress import models
from vit_compress import param_paths
from vit_compress.models import flaxformer_names
from vit_compress.models import timm_names

PyTree = Any
Flat = Dict[str, Any]

PARAMS_DIR = 'params'               # orbax-written arrays of a saved model
CONFIG_FILE = 'model_config.json'   # the model config that rebuilds them
EXTRA_FILE = 'extra.json'           # optional metadata given to save_model
MODEL_SUBDIR = 'model'              # a training workdir's (or stage's) saved model

_POSEMB = 'Transformer/posembed_input/pos_embedding'
_PREFIX_TOKENS = ('cls', 'dist')    # tokens before the patch grid, in order
# Parameters a model initialises fresh when the checkpoint lacks them or has
# another number of classes: classifier heads and the DeiT token.
_FRESH = re.compile(r'^(head|head_dist)/|^dist$')
# Checkpoint layers skipped when the model has no such layer at all.
_DROPPABLE = re.compile(r'^(pre_logits|head|head_dist)/')
# vit_jax's pre-Linen names inside an encoder block, by Linen name.
_PRE_LINEN_BLOCK = {'LayerNorm_0': 'LayerNorm_0',
                    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
                    'LayerNorm_1': 'LayerNorm_2',
                    'MlpBlock_0': 'MlpBlock_3'}

_HINT = ('Build the model the checkpoint was trained with: the zoo name is in '
         "the file name ('Ti_16' for 'Ti_16-i21k-300ep-...npz', 'R_Ti_16' for "
         "'R+Ti_16-...', 'R50_B_16', 'Mixer_B_16'), and a pruned model needs "
         'the per-layer transformer.num_heads / mlp_dim it was saved with '
         '(load_model restores them). A different image_size (position '
         'embeddings are resampled) or num_classes (the head is '
         're-initialised) is handled automatically.')


class CheckpointMismatchError(ValueError):
  """A checkpoint whose parameters do not fit the model; lists every key."""


# ------------------------------------------------------------------ npz files
def read_npz(path: str) -> Flat:
  """{'/'-joined path: array} from a local or `gs://` `.npz` (never unpickles)."""
  path = os.fspath(path)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'Checkpoint file not found: {path}')
  if tf.io.gfile.isdir(path):
    raise IsADirectoryError(f'{path} is a directory, not an .npz file; models '
                            'written by save_model load with load_model or '
                            'load_pretrained.')
  with tf.io.gfile.GFile(path, 'rb') as f:
    try:
      data = np.load(f, allow_pickle=False)
      if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError('it holds one array, not named parameters')
      with data:
        return {key: _bfloat16(data[key]) for key in data.files}
    except (ValueError, OSError) as e:  # object arrays need pickle: refused
      raise ValueError(
          f'{path} is not an .npz file of plain arrays ({e}). Files holding '
          'Python objects are never unpickled: save the parameters with '
          'np.savez as numeric arrays.') from None


def _bfloat16(value: np.ndarray) -> np.ndarray:
  """np.savez stores bfloat16 (big_vision's bf16 checkpoints) as raw 2-byte
  records ('|V2'): they are bfloat16 again here. No other record type is
  valid in a checkpoint, so any '|V2' array is read as bfloat16."""
  if value.dtype.kind == 'V' and value.dtype.itemsize == 2 and not value.dtype.names:
    return value.view(jnp.bfloat16)
  return value


def export_npz(path: str, params: PyTree, names: str = 'pre_linen') -> None:
  """Writes `params` as a vit_jax `.npz`: '/'-joined paths to float32 arrays.

  `names='pre_linen'` (the default) renames encoder blocks as the public
  vit_jax files spell them (`MultiHeadDotProductAttention_1`, `LayerNorm_2`,
  `MlpBlock_3`): every tool that reads AugReg files (vit_jax, which passes
  files through flax's `convert_pre_linen`, and PyTorch ports that hard-code
  these names) then reads ours; `load_npz` reads either. `names='linen'`
  keeps our names. bfloat16 arrays are widened to float32 (npz has no
  bfloat16); integer arrays (quantized weights) keep their dtype.
  """
  if names not in ('pre_linen', 'linen'):
    raise ValueError(f"export_npz: names={names!r}; use 'pre_linen' or 'linen'.")
  arrays = {}
  for key, leaf in param_paths.flatten_with_paths(params):
    if not hasattr(leaf, 'shape'):
      raise TypeError(f'export_npz: {key} is a {type(leaf).__name__}, not an array.')
    value = np.asarray(leaf)
    if value.dtype.kind not in 'fiub':  # ml_dtypes' bfloat16 has kind 'V'
      value = value.astype(np.float32)
    arrays[_to_pre_linen(key) if names == 'pre_linen' else key] = value
  buffer = io.BytesIO()  # gs:// files cannot seek, which np.savez needs
  np.savez(buffer, **arrays)
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(buffer.getvalue())
  logging.info('Wrote %d arrays (%.1f MiB) to %s.', len(arrays),
               buffer.tell() / 2**20, path)


def _to_pre_linen(key: str) -> str:
  return re.sub(r'(^|/)(encoderblock_\d+)/([A-Za-z]+_\d+)(?=/)',
                lambda m: f'{m[1]}{m[2]}/{_PRE_LINEN_BLOCK.get(m[3], m[3])}', key)


def load_npz(path: str, model_config: ml_collections.ConfigDict,
             init_params: Optional[PyTree] = None) -> PyTree:
  """Parameters for `model_config` from a vit_jax or big_vision `.npz` file.

  Re-initialised parameters (a head with another number of classes) take
  their values from `init_params`, or are zeros when it is not given (as
  our models initialise heads by default).
  """
  flat = read_npz(path)
  return _fit_tree(flat, os.fspath(path), model_config, init_params)


def load_timm(path: str, model_config: ml_collections.ConfigDict,
              init_params: Optional[PyTree] = None) -> PyTree:
  """Parameters for a MobileViT config from timm's `.safetensors` state dict
  (`models.timm_names`: read with numpy, no torch); fitted like `load_npz`."""
  flat = timm_names.to_ours(timm_names.read_safetensors(os.fspath(path)),
                            int(model_config.num_heads))
  return _fit_tree(flat, os.fspath(path), model_config, init_params)


# --------------------------------------------------------- names and fitting
def _our_names(flat: Flat, target: Mapping[str, Any]) -> Tuple[Flat, str, set]:
  """Renames checkpoint keys to ours; returns (flat, layout, posemb scopes).

  The scopes are the towers whose position embedding came from big_vision's
  top-level `pos_embedding`, which has no class-token slot.
  """
  layout = 'vit_jax'
  for prefix, name in (('params/', 'big_vision'),
                       ('opt/target/', 'vit_jax training state')):
    if any(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
      layout = name
      break
  else:
    # A params-only big_vision file: no prefix, but its own marks (a tower's
    # top-level pos_embedding, a scanned encoderblock, two towers, a MAP head).
    if any(re.match(r'^((img|txt)/)?pos_embedding$|(^|/)encoderblock/|^(img|txt)/'
                    r'|(^|/)MAPHead_0/', k) for k in flat):
      layout = 'big_vision'

  # flax's own rename: per-type numbering; Linen names pass through unchanged.
  renamed = dict(param_paths.flatten_with_paths(
      flax_checkpoints.convert_pre_linen(param_paths.tree_from_flat(flat))))
  if set(renamed) != set(flat):
    layout += ', pre-Linen names'
  flat = _unstack_scanned_blocks(renamed, target)
  flat, bert = flaxformer_names.to_ours(flat, target)   # vit_jax LiT's BERT tower
  if layout.startswith('big_vision') and (bert or 'img/' + _POSEMB in flat):
    # Two towers without a prefix, the image one in vit_jax's names: vit_jax's LiT.
    layout = layout.replace('big_vision', 'vit_jax LiT', 1) + (
        ', flaxformer BertEncoder' if bert else '')
  posemb_scopes = set()
  for key in list(flat):
    if key.endswith('pos_embedding') and key not in target:
      scope = key[:-len('pos_embedding')]
      at_tower_root = scope == '' or scope.endswith('/')
      if (at_tower_root and scope + _POSEMB in target
          and scope + _POSEMB not in flat):
        flat[scope + _POSEMB] = flat.pop(key)
        posemb_scopes.add(scope)
  return flat, layout, posemb_scopes


def _unstack_scanned_blocks(flat: Flat, target: Mapping[str, Any]) -> Flat:
  """big_vision's scanned `encoderblock/...` (layer axis first) -> `encoderblock_i/...`."""
  out = {}
  for key, value in flat.items():
    m = re.fullmatch(r'((?:.*/)?)encoderblock/(.*)', key)
    if m and f'{m[1]}encoderblock_0/{m[2]}' in target:
      for i, layer in enumerate(value):
        out[f'{m[1]}encoderblock_{i}/{m[2]}'] = layer
    else:
      out[key] = value
  return out


def resize_posemb(posemb: np.ndarray, num_tokens: int, src_prefix: int = 1,
                  dst_prefix: int = 1) -> np.ndarray:
  """(1, src_prefix + g*g, D) -> (1, num_tokens, D): bilinear on the square grid.

  The first `src_prefix` rows belong to class/distillation tokens and are
  kept; missing prefix rows are zeros (big_vision adds no position embedding
  to its class token, so a zero slot is exactly equivalent).
  """
  posemb = np.asarray(posemb, np.float32)
  prefix, grid = posemb[:, :src_prefix], posemb[0, src_prefix:]
  old, new = math.isqrt(len(grid)), math.isqrt(num_tokens - dst_prefix)
  if old * old != len(grid) or new * new != num_tokens - dst_prefix:
    raise ValueError(f'position embedding grids must be square: {len(grid)} -> '
                     f'{num_tokens - dst_prefix} patch tokens.')
  if old != new:
    grid = grid.reshape(old, old, -1)
    grid = scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)
  grid = grid.reshape(1, new * new, -1)
  prefix = prefix[:, :dst_prefix]
  pad = np.zeros((1, dst_prefix - prefix.shape[1], grid.shape[-1]), np.float32)
  return np.concatenate([prefix, pad, grid], axis=1)


def _fit(src: Flat, target: Mapping[str, Any], init: Optional[Mapping[str, Any]],
         posemb_scopes: set, source: str, model_name: str) -> Flat:
  """Fits renamed checkpoint arrays to the target's shapes and dtypes."""
  out, used = {}, set()
  mismatched, missing = [], []
  fresh_groups = _fresh_groups(src, target)
  squeezed = []
  for key, want in target.items():
    shape, dtype = tuple(want.shape), np.dtype(want.dtype)
    if key.split('/')[0] in fresh_groups:
      out[key] = init[key] if init is not None else np.zeros(shape, dtype)
      used.add(key)
      continue
    if key not in src:
      missing.append(key)
      continue
    used.add(key)
    value = src[key]
    if key.endswith(_POSEMB):
      scope = key[:-len(_POSEMB)]
      src_prefix = 0 if scope in posemb_scopes else sum(
          scope + t in src for t in _PREFIX_TOKENS)
      dst_prefix = sum(scope + t in target for t in _PREFIX_TOKENS)
      if value.shape != shape or src_prefix != dst_prefix:
        try:
          value = _resize_logged(key, value, shape, src_prefix, dst_prefix)
        except ValueError as e:
          mismatched.append((key, value.shape, shape, f' ({e})'))
          continue
    if value.shape != shape:
      if value.size == math.prod(shape) and np.squeeze(value).shape == tuple(
          d for d in shape if d != 1):
        value = value.reshape(shape)  # old GroupNorm: (1, 1, 1, C) -> (C,)
        squeezed.append(key)
      else:
        mismatched.append((key, value.shape, shape, ''))
        continue
    if value.dtype != dtype:
      if not (_is_float(value.dtype) and _is_float(dtype)):
        mismatched.append((key, f'{value.shape} {value.dtype}', f'{shape} {dtype}', ''))
        continue
      value = value.astype(dtype)  # e.g. float32 files into a bfloat16 model
    out[key] = value
  unexpected = sorted(set(src) - used)
  # Top layers the model does without (a classifier's head in a LiT image
  # tower or a feature extractor, pre_logits when fine-tuning) are dropped.
  dropped = [k for k in unexpected if _DROPPABLE.match(k) and not any(
      t.startswith(_DROPPABLE.match(k)[0]) for t in target)]
  unexpected = [k for k in unexpected if k not in dropped]
  if mismatched or missing or unexpected:
    raise CheckpointMismatchError(_mismatch_message(
        source, model_name, mismatched, missing, unexpected))
  for group in sorted(fresh_groups):
    before = [f'{k} {np.shape(src[k])}' for k in src if k.split('/')[0] == group]
    logging.info('%s: %s re-initialised (%s) to the model\'s %s; checkpoint '
                 'had %s.', source, group,
                 'from init_params' if init is not None else 'zeros',
                 {k: tuple(target[k].shape) for k in target
                  if k.split('/')[0] == group}, before or 'none')
  if squeezed:
    logging.info('%s: dropped singleton axes of %d arrays (old GroupNorm '
                 'layout), e.g. %s.', source, len(squeezed), squeezed[0])
  if dropped:
    logging.info('%s: dropped %s, which the model does not have.', source,
                 dropped)
  return out


def _fresh_groups(src: Flat, target: Mapping[str, Any]) -> set:
  """Heads (and the DeiT token) to initialise fresh instead of loading.

  A head is fresh when the checkpoint lacks it or has another number of
  classes (only the last axis differs); any other difference is an error.
  """
  groups = set()
  for key, want in target.items():
    if not _FRESH.search(key):
      continue
    shape = tuple(want.shape)
    have = np.shape(src[key]) if key in src else None
    other_classes = (have is not None and key.startswith('head')
                     and len(have) == len(shape) and have != shape
                     and have[:-1] == shape[:-1])
    if have is None or other_classes:
      groups.add(key.split('/')[0])
  return groups


def _is_float(dtype) -> bool:
  return jax.dtypes.issubdtype(dtype, np.floating)  # bfloat16 included


def _resize_logged(key, value, shape, src_prefix, dst_prefix):
  if value.ndim != 3 or len(shape) != 3 or value.shape[-1] != shape[-1]:
    raise ValueError('the widths differ; only the number of tokens can be resampled')
  resized = resize_posemb(value, shape[1], src_prefix, dst_prefix).astype(value.dtype)
  logging.info('%s: position embedding %s (%d prefix tokens) resized to %s '
               '(%d prefix tokens).', key, value.shape, src_prefix, shape,
               dst_prefix)
  if src_prefix > dst_prefix:
    logging.warning('%s: dropped %d prefix-token rows the model has no token '
                    'for.', key, src_prefix - dst_prefix)
  return resized


def _mismatch_message(source, model_name, mismatched, missing, unexpected):
  lines = [f'{source} does not fit the model {model_name!r}: '
           f'{len(mismatched)} shape mismatches, {len(missing)} parameters '
           f'missing from the checkpoint, {len(unexpected)} not in the model.']
  if mismatched:
    lines.append('Shape mismatches (checkpoint vs model):')
    lines += [f'  {k}: {a} in the checkpoint, {b} in the model{why}'
              for k, a, b, why in mismatched]
  if missing:
    lines.append('Missing from the checkpoint:')
    lines += [f'  {k}' for k in missing]
  if unexpected:
    lines.append('In the checkpoint but not in the model:')
    lines += [f'  {k}' for k in unexpected]
  lines.append(_HINT)
  return '\n'.join(lines)


def _fit_tree(flat: Flat, source: str, model_config, init_params,
              into: Optional[str] = None) -> PyTree:
  """Renames and fits `flat` to the model (or to its subtree `into`)."""
  model_name = model_config.get('name') or model_config.get('family', 'model')
  reference = (init_params if init_params is not None
               else models.param_shapes(model_config))
  full = dict(param_paths.flatten_with_paths(reference))
  prefix = f'{into.strip("/")}/' if into else ''
  if prefix and not any(k.startswith(prefix) for k in full):
    raise ValueError(f'into={into!r}: the model has no parameters under it; '
                     f'top-level names: {sorted({k.split("/")[0] for k in full})}.')
  target = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
  init = target if init_params is not None else None
  src, layout, scopes = _our_names(flat, target)
  logging.info('Importing %s [%s] into %s%s.', source, layout,
               model_name, f' / {into}' if into else '')
  fitted = _fit(src, target, init, scopes, f'{source} [{layout}]',
                model_name + (f' / {into}' if into else ''))
  if prefix:
    full.update({prefix + k: v for k, v in fitted.items()})
    fitted = full
  return param_paths.tree_from_flat(fitted, like=reference)


# ------------------------------------------------------------- saved models
def _jsonable(value):
  """Config values as JSON: tuples become lists, numpy scalars Python numbers."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def _tuples(value):
  """JSON lists back to tuples: our model configs hold tuples, never lists."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _config_dict(model_config) -> dict:
  if hasattr(model_config, 'to_dict'):
    return model_config.to_dict()
  return dict(model_config)


def config_to_json(model_config) -> dict:
  """A model config as the JSON-able dict a saved model stores."""
  return _jsonable(_config_dict(model_config))


def config_from_json(value: dict) -> ml_collections.ConfigDict:
  """Inverse of `config_to_json` (lists back to tuples)."""
  return ml_collections.ConfigDict(_tuples(value))


def _write_json(path: str, value) -> None:
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(_jsonable(value), indent=2, sort_keys=True))


def _read_json(path: str):
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.loads(f.read())


def _orbax_path(path: str) -> str:
  return path if '://' in path else os.path.abspath(path)


def read_model_config(path: str) -> ml_collections.ConfigDict:
  """A model config written as JSON (a saved model's, an exported npz's)."""
  return ml_collections.ConfigDict(_tuples(_read_json(path)))


def recorded_data(model_config) -> dict:
  """What a trained model records about its data (`inference`: dataset,
  data_dir, splits, eval pp string, class names), written by training and
  kept by every transform; {} for a model saved without it."""
  recorded = model_config.get('inference')
  return {} if recorded is None else dict(recorded.to_dict()
                                          if hasattr(recorded, 'to_dict') else recorded)


def save_model(directory: str, params: PyTree,
               model_config: ml_collections.ConfigDict,
               extra: Optional[Mapping[str, Any]] = None,
               overwrite: bool = False) -> None:
  """Saves arrays (orbax, any dtype) and the model config that rebuilds them.

  `extra` is JSON-able metadata (e.g. how the model was compressed), returned
  by `load_model(directory, with_extra=True)`. With several processes this is
  collective (call it on every one): `params` may be global jax.Arrays split
  between processes; each writes its shards, process 0 the JSON files.
  """
  directory = os.fspath(directory)
  config_path = os.path.join(directory, CONFIG_FILE)
  params_path = os.path.join(directory, PARAMS_DIR)
  if not overwrite and (tf.io.gfile.exists(config_path)
                        or tf.io.gfile.exists(params_path)):
    raise FileExistsError(f'{directory} already holds a saved model; pass '
                          'overwrite=True or choose another directory.')
  extra_json = None if extra is None else json.dumps(_jsonable(extra))  # fail early
  tf.io.gfile.makedirs(directory)
  ocp.PyTreeCheckpointer().save(_orbax_path(params_path),
                                args=ocp.args.PyTreeSave(params), force=overwrite)
  # The config is written last: a directory that has it holds a whole model.
  if jax.process_index() == 0:
    if extra_json is not None:
      _write_json(os.path.join(directory, EXTRA_FILE), json.loads(extra_json))
    elif tf.io.gfile.exists(os.path.join(directory, EXTRA_FILE)):
      tf.io.gfile.remove(os.path.join(directory, EXTRA_FILE))
    _write_json(config_path, _config_dict(model_config))
  if jax.process_count() > 1:  # no process reads it back before it is whole
    multihost_utils.sync_global_devices(f'save_model {directory}')
  logging.info('Saved model %s (%d parameters) to %s.',
               model_config.get('name', ''), models.count_params(params), directory)


def is_saved_model(path: str) -> bool:
  return tf.io.gfile.exists(os.path.join(os.fspath(path), CONFIG_FILE))


def find_model_dir(path: str) -> Optional[str]:
  """The saved model at `path`, or at `path`/model (a training workdir's); None
  when neither holds a model config beside its params."""
  path = os.fspath(path)
  for candidate in (path, os.path.join(path, MODEL_SUBDIR)):
    if is_saved_model(candidate) and tf.io.gfile.isdir(
        os.path.join(candidate, PARAMS_DIR)):
      return candidate
  return None


def load_model(directory: str, with_extra: bool = False):
  """(model_config, params) — or with `with_extra`, (model_config, params, extra).

  Arrays come back as numpy arrays with their saved dtypes (int8 stays int8),
  whatever devices saved them; `extra` is None when none was saved.
  """
  directory = os.fspath(directory)
  if not is_saved_model(directory):
    if not tf.io.gfile.exists(directory):
      raise FileNotFoundError(f'No saved model at {directory}: it does not exist.')
    raise FileNotFoundError(
        f'{directory} is not a saved model: {CONFIG_FILE} is missing (save_model '
        'writes it beside params/). For vit_jax or big_vision .npz files use '
        'load_npz or load_pretrained.')
  model_config = read_model_config(os.path.join(directory, CONFIG_FILE))
  checkpointer = ocp.PyTreeCheckpointer()
  path = _orbax_path(os.path.join(directory, PARAMS_DIR))
  metadata = checkpointer.metadata(path).item_metadata.tree
  # Restoring as numpy needs no device layout, so any machine reads any save.
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                              metadata)
  params = checkpointer.restore(
      path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  if not with_extra:
    return model_config, params
  extra_path = os.path.join(directory, EXTRA_FILE)
  extra = _read_json(extra_path) if tf.io.gfile.exists(extra_path) else None
  return model_config, params, extra


def load_pretrained(path: str, model_config: ml_collections.ConfigDict,
                    init_params: PyTree, into: Optional[str] = None) -> PyTree:
  """Initial parameters from a checkpoint, fitted to freshly initialised ones.

  `path` is a vit_jax / big_vision `.npz` file or a directory from
  `save_model`. Position embeddings are resampled to the model's resolution
  and heads with another number of classes take their values from
  `init_params`. `into` loads the checkpoint into one subtree only, e.g.
  `into='img'` initialises LiT's image tower from a ViT classifier (its head
  becomes the freshly initialised projection); the rest keeps `init_params`.
  """
  path = os.fspath(path)
  if is_saved_model(path):
    _, params = load_model(path)
    flat = dict(param_paths.flatten_with_paths(params))
    source = f'saved model {path}'
  elif path.endswith('.safetensors'):  # timm (PyTorch) MobileViT weights
    flat = timm_names.to_ours(timm_names.read_safetensors(path),
                              int(model_config.num_heads))
    source = path
  else:
    flat = read_npz(path)
    source = path
  return _fit_tree(flat, source, model_config, init_params, into=into)

