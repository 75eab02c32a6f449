"""Edge artifacts: every runtime's float and int8 file, checked, timed, one picked.

    manifest = export_optimized('Ti_16', (1, 224, 224, 3), './lite_model',
                                checkpoint='Ti_16.npz')

(also `checkpoint.export_optimized` and `python -m vit_compress.export
--model=... --input_shape=1,224,224,3 --output_path=...`). For one model at
one input shape it writes each artifact of ARTIFACTS (TFLite float and int8,
ONNX float, dynamic int8 and static QDQ int8), then

  checks each in its own interpreter (LiteRT, ONNX Runtime) against the JAX
  model it came from: top-1 agreement and relative logit error on the eval
  split of the dataset the model records (`checkpoint_files.recorded_data`, or
  `dataset=`), else on random images in [-1, 1] (the manifest says which);
  times each at the input shape: warm-up, then the median of `rounds`
  interleaved rounds (each artifact once per round, so load from other
  processes slows all alike), with `threads` threads;
  writes manifest.json: every artifact's numbers and `chosen`, the fastest
  artifact whose check passed.

Invariant: the chosen artifact passed its check in this run, on this
machine, and the manifest says how fast it was against the fastest float one.
A float artifact passes with top-1 identical to JAX on every check image and
logits within FLOAT_TOLERANCE; an int8 one with >= MIN_INT8_AGREEMENT % top-1
agreement (on random images, with logits within RANDOM_INT8_LOGIT_ERROR). int8 calibration uses the training split with the eval
preprocessing (`calibration.images`), or the check images' own
distribution when no dataset is known.
"""
import dataclasses
import json
import math
import os
import statistics
import time
from typing import Any, Callable, Dict, Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from vit_compress import artifact as artifact_lib
from vit_compress import checkpoint_files
from vit_compress import models
from vit_compress import onnx_export
from vit_compress import tflite
from vit_compress import zoo
from vit_compress.evaluation import classification
from vit_compress.models import families
from vit_compress.registry import Registry

MANIFEST_FILE = 'manifest.json'
FLOAT_TOLERANCE = 1e-4      # relative logit error of a float artifact
MIN_INT8_AGREEMENT = 99.0   # % top-1 agreement with JAX of an int8 artifact
RANDOM_CHECK_IMAGES = 256
# Without real images (random weights, no dataset), top-1 agreement says
# little: on noise a model's top logits nearly tie, so any rounding flips them
# (a random Ti/16's ONNX dynamic int8 agreed on 94 % of noise images at 2.5 %
# logit error). There an int8 file passes on its relative logit error alone;
# the int8 files of a random Ti/16 at 224 px measured 0.025-0.04.
RANDOM_INT8_LOGIT_ERROR = 0.05


@dataclasses.dataclass(frozen=True)
class Artifact:
  runtime: str     # 'tflite' | 'onnx'
  precision: str   # 'float32' | 'int8'
  suffix: str
  # build(apply_fn, params, input_shape, calibration images) -> bytes
  build: Callable[..., bytes]
  calibrated: bool = False   # its build reads the calibration images


ARTIFACTS = Registry('edge artifact')


def _tflite(int8_mode=None):
  def build(fn, params, shape, calibration):
    return tflite.convert(fn, params, shape[1:], batch_size=shape[0],
                          int8=int8_mode is not None, int8_mode=int8_mode or 'full',
                          representative_images=calibration,
                          num_calibration=max(len(calibration[0]) // shape[0], 1) * shape[0])
  return build


def _onnx_float(fn, params, shape, calibration):
  del calibration
  return onnx_export.convert(fn, params, shape[1:])


ARTIFACTS.register('tflite_float')(Artifact('tflite', 'float32', '.tflite', _tflite()))
ARTIFACTS.register('tflite_int8')(Artifact('tflite', 'int8', '.tflite', _tflite('full'),
                                          calibrated=True))
ARTIFACTS.register('tflite_int8_dynamic')(
    Artifact('tflite', 'int8', '.tflite', _tflite('dynamic')))
ARTIFACTS.register('onnx_float')(Artifact('onnx', 'float32', '.onnx', _onnx_float))
# The int8 ONNX files quantize the float one (built first, see _build_all).
ARTIFACTS.register('onnx_int8_dynamic')(Artifact(
    'onnx', 'int8', '.onnx', lambda float_blob, calibration: onnx_export.quantize_dynamic(float_blob)))
ARTIFACTS.register('onnx_int8_static')(Artifact(
    'onnx', 'int8', '.onnx', lambda float_blob, calibration: onnx_export.quantize_static(
        float_blob, calibration, num_calibration=len(calibration[0])), calibrated=True))


# ------------------------------------------------------------ the inputs
def check_input_shape(model_config: ml_collections.ConfigDict,
                      input_shape: Sequence[int]) -> tuple:
  """(B, H, W, 3) with square H = W that the patch grid tiles; ValueError otherwise."""
  from vit_compress import config_schema  # pylint: disable=g-import-not-at-top
  shape = tuple(input_shape)
  if len(shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
    raise ValueError(f'input_shape={shape}: give 4 positive integers '
                     '(batch, height, width, channels), e.g. (1, 224, 224, 3).')
  if shape[3] != 3:
    raise ValueError(f'input_shape={shape} has {shape[3]} channels; the models '
                     'take RGB images: use 3 channels, e.g. (1, 224, 224, 3).')
  if shape[1] != shape[2]:
    raise ValueError(f'input_shape={shape} is not square; the models take '
                     f'square images: use ({shape[0]}, {shape[1]}, {shape[1]}, 3).')
  if not families.lookup(model_config).class_head:
    raise ValueError('export_optimized covers image classifiers; a LiT model '
                     'has two towers and no class logits.')
  if model_config.get('patches'):
    config = ml_collections.ConfigDict(model_config.to_dict())
    config.image_size = int(shape[1])
    try:
      config_schema._check_patches(config, 'model')  # pylint: disable=protected-access
    except ValueError as e:
      raise ValueError(f'input_shape={shape}: {e}') from None
  return tuple(int(d) for d in shape)


def resolve_config(model: str, size: int, *, checkpoint_path: Optional[str] = None,
                   random_init: bool = False, num_classes: Optional[int] = None
                   ) -> ml_collections.ConfigDict:
  """The model config `model` names, read without loading weights (for early checks)."""
  model = os.fspath(model)
  directory = checkpoint_files.find_model_dir(model)
  if directory:
    return artifact_lib.read_config(directory)
  if model.endswith('.npz'):
    beside = artifact_lib.sidecar_path(model)
    if not os.path.exists(model):
      raise FileNotFoundError(f'No file {model}.')
    if not os.path.exists(beside):
      raise ValueError(f'{model} has no {os.path.basename(beside)} beside it (what '
                       'export writes); name the architecture instead: '
                       f"model='<zoo name>', checkpoint='{model}'.")
    with open(beside) as f:
      return ml_collections.ConfigDict(json.load(f))
  if os.path.sep in model or os.path.exists(model):
    raise FileNotFoundError(f'{model} is neither a saved model directory (with '
                            f'{checkpoint_files.CONFIG_FILE}), a workdir holding model/, '
                            'nor an .npz file.')
  overrides = {'image_size': size}
  if random_init and checkpoint_path is None:
    overrides['head_zeroinit'] = False   # a zero head's logits tie: nothing to check
  if num_classes:
    overrides['num_classes'] = num_classes
  config = zoo.get(model, **overrides)   # an unknown name lists the known ones
  if checkpoint_path is None and not random_init:
    raise ValueError(f'model={model!r} is a zoo name: pass checkpoint=<.npz or saved '
                     'model> for its weights, or random_init=True (--random_init) '
                     'to export random weights (for speed measurements only).')
  if checkpoint_path is not None and not os.path.exists(checkpoint_path):
    raise FileNotFoundError(f'checkpoint={checkpoint_path}: no such file or directory.')
  return config


def load(model: str, size: int, *, checkpoint_path: Optional[str] = None,
         random_init: bool = False, num_classes: Optional[int] = None):
  """(float model config, float params, info): info has 'source', 'dataset'."""
  config = resolve_config(model, size, checkpoint_path=checkpoint_path,
                          random_init=random_init, num_classes=num_classes)
  directory = checkpoint_files.find_model_dir(os.fspath(model))
  info = {'source': os.fspath(model), 'dataset': None}
  if directory:
    loaded = artifact_lib.load(directory)
    info.update(source=directory,
                dataset=checkpoint_files.recorded_data(loaded.model_config).get('dataset'))
    if loaded.quantized:
      loaded = loaded.dequantized()
      info['dequantized'] = True   # int8 weights times scales: exported as float
    config, params = loaded.model_config, loaded.params
  elif os.fspath(model).endswith('.npz'):
    params = checkpoint_files.load_npz(model, config)
  else:
    init = jax.device_get(jax.jit(lambda k: models.init(config, k))(jax.random.key(0)))
    if checkpoint_path is None:
      logging.warning('export_optimized: %s with RANDOM weights (random_init=True): '
                      'the artifacts are good for speed measurements, not predictions.',
                      model)
      info['random_init'] = True
      params = init
    else:
      params = checkpoint_files.load_pretrained(checkpoint_path, config, init)
      info['checkpoint'] = os.fspath(checkpoint_path)
      info['dataset'] = _recorded_dataset(checkpoint_path)
  if int(config.image_size) != size:
    raise ValueError(f'{info["source"]} was built for {config.image_size} px images; '
                     f'input_shape asks for {size} px. Export at '
                     f'(batch, {config.image_size}, {config.image_size}, 3).')
  return config, jax.device_get(params), info


def _recorded_dataset(path) -> Optional[str]:
  directory = checkpoint_files.find_model_dir(os.fspath(path))
  if not directory:
    return None
  model_config = checkpoint_files.read_model_config(
      os.path.join(directory, checkpoint_files.CONFIG_FILE))
  return checkpoint_files.recorded_data(model_config).get('dataset')


def _data_config(model_config, dataset: str, data_config=None):
  from vit_compress import config_schema  # pylint: disable=g-import-not-at-top
  config = config_schema.defaults() if data_config is None else config_schema.complete(data_config)
  config = ml_collections.ConfigDict(config.to_dict())
  if data_config is None:
    size = int(model_config.image_size)
    config.dataset = dataset
    config.pp_eval = f'decode|resize({size})|to_rgb|value_range(-1, 1)|onehot'
  config.model = model_config
  return config


def _check_and_calibration_images(model_config, info, num_calibration, data_config,
                                  data_dir):
  """(check batches [{'image'}], calibration images [array], description)."""
  from vit_compress import calibration as calibration_lib  # pylint: disable=g-import-not-at-top
  from vit_compress import data  # pylint: disable=g-import-not-at-top
  dataset = info.get('dataset') or (data_config.dataset if data_config else None)
  if dataset:
    config = _data_config(model_config, dataset, data_config)
    if data_dir:
      config.data_dir = data_dir
    batches = []
    for batch in data.make_eval_iterator(config):
      real = np.asarray(batch['mask']) > 0
      batches.append({'image': np.asarray(batch['image'])[real]})
    calibration = np.concatenate(calibration_lib.images(config, num_calibration))
    split = config.get('eval_split') or 'test'
    return batches, [calibration[:num_calibration]], f'{dataset} {split} split'
  size = int(model_config.image_size)
  rng = np.random.default_rng(0)
  check = rng.uniform(-1, 1, (RANDOM_CHECK_IMAGES, size, size, 3)).astype(np.float32)
  calibration = rng.uniform(-1, 1, (num_calibration, size, size, 3)).astype(np.float32)
  return [{'image': check}], [calibration], 'random images in [-1, 1] (no dataset recorded)'


def build(name: str, fn, params, shape: Sequence[int], calibration,
          blobs: Optional[Dict[str, bytes]] = None) -> bytes:
  """The file of artifact `name` for `fn(params, images)` at `shape` (B, H, W, 3).

  `calibration`: [images (N, H, W, 3)] for the calibrated int8 files.
  `blobs` caches the files built so far: the int8 ONNX files quantize the
  float one, built once.
  """
  blobs = {} if blobs is None else blobs
  if name not in blobs:
    artifact = ARTIFACTS.get(name)
    if artifact.runtime == 'onnx' and artifact.precision == 'int8':
      blobs[name] = artifact.build(build('onnx_float', fn, params, shape, calibration,
                                         blobs), calibration)
    else:
      blobs[name] = artifact.build(fn, params, shape, calibration)
  return blobs[name]


# ----------------------------------------------------------- the runtimes
def predictor(artifact: Artifact, path: str, threads: int):
  """`predict(images) -> logits` running the file in its own runtime."""
  if artifact.runtime == 'tflite':
    interp = tflite.interpreter(path, num_threads=threads)
    return lambda images: tflite.predict(interp, images)
  sess = onnx_export.session(path, threads)
  return lambda images: onnx_export.predict(sess, images)


def _check(artifact: Artifact, predict, reference, batches,
           real_images: bool) -> Dict[str, Any]:
  logits = np.concatenate([predict(b['image']) for b in batches])
  error = float(np.linalg.norm(logits - reference) / np.linalg.norm(reference))
  agreement = 100.0 * float(np.mean(logits.argmax(-1) == reference.argmax(-1)))
  if artifact.precision == 'float32':
    passed = agreement == 100.0 and error <= FLOAT_TOLERANCE
    criterion = f'top-1 identical, logit error <= {FLOAT_TOLERANCE}'
  elif real_images:
    passed = agreement >= MIN_INT8_AGREEMENT
    criterion = f'top-1 agreement >= {MIN_INT8_AGREEMENT} %'
  else:
    passed = error <= RANDOM_INT8_LOGIT_ERROR
    criterion = f'logit error <= {RANDOM_INT8_LOGIT_ERROR} (random images)'
  return {'top1_agreement': agreement, 'logit_error': error, 'count': len(logits),
          'passed': bool(passed), 'criterion': criterion}


def interleaved_seconds(calls: Dict[str, Callable[[], Any]], rounds: int = 7,
                        min_run_s: float = 0.2, warmup: int = 2) -> Dict[str, Dict[str, float]]:
  """{key: {'median', 'min', 'max'} seconds per call}; every call timed once a round."""
  repeats = {}
  for key, call in calls.items():
    for _ in range(warmup):
      call()
    start = time.perf_counter()
    call()
    repeats[key] = max(1, math.ceil(min_run_s / max(time.perf_counter() - start, 1e-9)))
  runs = {key: [] for key in calls}
  for _ in range(rounds):
    for key, call in calls.items():
      start = time.perf_counter()
      for _ in range(repeats[key]):
        call()
      runs[key].append((time.perf_counter() - start) / repeats[key])
  return {key: {'median': statistics.median(r), 'min': min(r), 'max': max(r)}
          for key, r in runs.items()}


def cpu_info() -> Dict[str, Any]:
  """The CPU model and its int8-relevant flags (x86 /proc/cpuinfo)."""
  model, flags = 'unknown', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name') and model == 'unknown':
          model = line.split(':', 1)[1].strip()
        elif line.startswith('flags') and not flags:
          flags = set(line.split(':', 1)[1].split())
  except OSError:
    pass
  wanted = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8')
  return {'model': model, 'cores': os.cpu_count(),
          'flags': [f for f in wanted if f in flags]}


# -------------------------------------------------------------- the entry
def export_optimized(model: str, input_shape: Sequence[int], output_path: str, *,
                     checkpoint_path: Optional[str] = None, random_init: bool = False,
                     num_classes: Optional[int] = None,
                     artifacts: Optional[Sequence[str]] = None,
                     dataset: Optional[str] = None,
                     data_config: Optional[ml_collections.ConfigDict] = None,
                     data_dir: Optional[str] = None, num_calibration: int = 128,
                     threads: Optional[int] = None, rounds: int = 7,
                     min_run_s: float = 0.2) -> Dict[str, Any]:
  """Writes, checks and times the edge artifacts; returns (and writes) the manifest.

  `model`: a zoo name (weights from `checkpoint_path`, or random with
  `random_init=True`), a saved / shrunk / quantized model directory (a
  training workdir resolves to its model/), or an .npz with its
  .model_config.json beside it. `input_shape`: (batch, H, W, 3), the shape
  every artifact is built for and timed at. `dataset` (or `data_config`, an
  experiment config's data keys) names the check and calibration data when
  the model records none (a quantized directory does not).
  """
  names = list(artifacts or ARTIFACTS.names())
  for name in names:
    ARTIFACTS.get(name)    # an unknown name fails here, before any work
  if len(tuple(input_shape)) != 4:
    check_input_shape(ml_collections.ConfigDict(), input_shape)
  config = resolve_config(model, int(tuple(input_shape)[1]), checkpoint_path=checkpoint_path,
                          random_init=random_init, num_classes=num_classes)
  shape = check_input_shape(config, input_shape)
  threads = int(threads or os.cpu_count())
  os.makedirs(output_path, exist_ok=True)

  config, params, info = load(model, shape[1], checkpoint_path=checkpoint_path,
                              random_init=random_init, num_classes=num_classes)
  fn = classification.forward_fn(models.build(config))
  info['dataset'] = info.get('dataset') or dataset
  batches, calibration, check_on = _check_and_calibration_images(
      config, info, num_calibration, data_config, data_dir)
  jitted = jax.jit(fn)
  reference = np.concatenate([np.asarray(jitted(params, b['image'])) for b in batches])

  entries, blobs, calls = {}, {}, {}
  images = np.asarray(np.concatenate([b['image'] for b in batches])[:shape[0]])
  if len(images) < shape[0]:
    images = np.resize(images, shape)
  for name in names:
    artifact = ARTIFACTS.get(name)
    logging.info('export_optimized: building %s.', name)
    start = time.perf_counter()
    blob = build(name, fn, params, shape, calibration, blobs)
    path = os.path.join(output_path, name + artifact.suffix)
    with open(path, 'wb') as f:
      f.write(blob)
    artifact_lib.write_sidecar(path, config)   # pp and names, for predict
    predict = predictor(artifact, path, threads)
    entries[name] = {'path': path, 'runtime': artifact.runtime,
                     'precision': artifact.precision, 'bytes': len(blob),
                     'build_s': time.perf_counter() - start,
                     'check': _check(artifact, predict, reference, batches,
                                     real_images=not check_on.startswith('random'))}
    calls[name] = lambda predict=predict: predict(images)
    logging.info('%s: %s', name, entries[name]['check'])

  seconds = interleaved_seconds(calls, rounds=rounds, min_run_s=min_run_s)
  for name, s in seconds.items():
    entries[name]['seconds_per_batch'] = s
    entries[name]['images_per_s'] = shape[0] / s['median']
  passed = [n for n in names if entries[n]['check']['passed']]
  chosen = min(passed, key=lambda n: seconds[n]['median']) if passed else None
  floats = [n for n in names if entries[n]['precision'] == 'float32']
  fastest_float = min(floats, key=lambda n: seconds[n]['median']) if floats else None
  manifest = {
      'model': info, 'model_name': config.get('name'),
      'input_shape': list(shape), 'threads': threads, 'cpu': cpu_info(),
      'check_images': check_on, 'timing': f'median of {rounds} interleaved rounds, '
      'after warm-up; seconds per call of the input_shape batch',
      'artifacts': entries, 'chosen': chosen, 'fastest_float': fastest_float,
      'chosen_speedup_over_fastest_float': (
          seconds[fastest_float]['median'] / seconds[chosen]['median']
          if chosen and fastest_float else None)}
  with open(os.path.join(output_path, MANIFEST_FILE), 'w') as f:
    json.dump(manifest, f, indent=2, default=str)
  if chosen is None:
    logging.warning('export_optimized: no artifact passed its accuracy check; '
                    'see %s.', os.path.join(output_path, MANIFEST_FILE))
  return manifest
