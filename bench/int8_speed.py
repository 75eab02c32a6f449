r"""int8 against float inference, in JAX (qwix) and in TFLite (LiteRT), measured.

    python bench/int8_speed.py              # Ti_16 at 64 px, batch 1 and 64, CPU
    python bench/int8_speed.py --model=S_16 --image_size=96 --batch_sizes=1,256
    python bench/int8_speed.py --image_size=224 --batch_sizes=1,32 --tflite_threads=2

One ViT with random weights (a proper init with a non-zero head; speed and
size do not depend on the values) in these forms:

  JAX float32        the Flax model, jitted;
  JAX int8 weights   compress.quantize PTQ, int8 per-channel weights, float
                     activations (qwix; patch embedding, head, LayerNorm float);
  JAX W8A8 dynamic   also int8 activations, scales computed at run time;
  JAX W8A8 static    activation scales calibrated on `calibration` images;
  TFLite float / int8  tflite.convert (full-integer int8 calibrated on the same
                     images), one file per batch size (TFLite shapes are
                     fixed), run in the LiteRT interpreter with
                     `tflite_threads` threads;
  TFLite int8 dynamic  dynamic-range int8 (int8 weights, activations quantized
                     per call), what export_optimized picks on x86;
  ONNX float / int8 dynamic / int8 static  onnx_export: the jax2onnx export
                     (one file, symbolic batch), ORT's quantize_dynamic and
                     static QDQ (calibrated on the same images), run in ONNX
                     Runtime's CPU provider with `tflite_threads` threads.

The CPU model and its int8 flags (AVX2, AVX-512, VNNI, AMX) head the table:
which int8 form is fastest depends on them.

img/s: every variant is compiled (or loaded) and warmed up, then timed in
`rounds` interleaved rounds (each run repeats calls for at least 0.3 s), the
median is shown; batch 1 blocks on every call (latency). Size: the artifact on
disk (checkpoint.save_model / quantize.save_quantized directories, .tflite
files). "logit err." is |logits - float logits| / |float logits| over 64
random images, a check that the int8 forms compute the same function.
"""
import os
import tempfile

from absl import app
from absl import flags
from ai_edge_litert.interpreter import Interpreter
import jax
import numpy as np

import machine
from vit_compress import checkpoint
from vit_compress import edge
from vit_compress import evaluation
from vit_compress import models
from vit_compress import onnx_export
from vit_compress import tflite
from vit_compress import zoo
from vit_compress.compress import quantize
from vit_compress.evaluation import classification

_MODEL = flags.DEFINE_string('model', 'Ti_16', 'Zoo ViT.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Input resolution.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '64'], 'Batch sizes to time.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved timed rounds (median).')
_CALIBRATION = flags.DEFINE_integer('calibration', 128,
                                    'Images calibrating static W8A8 and TFLite int8.')
_THREADS = flags.DEFINE_integer('tflite_threads', os.cpu_count(),
                                'LiteRT interpreter threads.')
_TFLITE = flags.DEFINE_bool('tflite', True, 'Also convert and time TFLite files.')
_ONNX = flags.DEFINE_bool('onnx', True, 'Also export and time ONNX files (ONNX Runtime).')
_OUT = flags.DEFINE_string('out_dir', None, 'Where artifacts go (default: a temp dir).')


def _images(n, seed):
  size = _IMAGE_SIZE.value
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _jax_variants(config, params, out_dir):
  """{name: (apply_fn, params, artifact directory)} for float and qwix int8."""
  float_dir = os.path.join(out_dir, 'jax_float32')
  checkpoint.save_model(float_dir, params, config, overwrite=True)
  variants = {'JAX float32': (classification.forward_fn(models.build(config)),
                              params, float_dir)}
  calibration = [{'image': x} for x in np.split(_images(_CALIBRATION.value, 1),
                                                max(_CALIBRATION.value // 32, 1))]
  for name, quant in (('JAX int8 weights', {}),
                      ('JAX W8A8 dynamic', {'act_dtype': 'int8'}),
                      ('JAX W8A8 static', {'act_dtype': 'int8', 'act_static': True})):
    quant = dict(mode='ptq', weight_dtype='int8', **quant,
                 calibration_batches=len(calibration))
    qparams, qconfig = quantize.quantize(params, config, quant, batches=calibration)
    directory = os.path.join(out_dir, name.split(' ', 1)[1].replace(' ', '_'))
    quantize.save_quantized(directory, qparams, qconfig, overwrite=True)
    variants[name] = (classification.forward_fn(quantize.quantized_model(qconfig)),
                      qparams, directory)
  return variants


def _tflite_files(config, params, out_dir, batch_sizes):
  """{(name, batch): path} of float and int8 files, one per batch size."""
  fn = classification.forward_fn(models.build(config))
  shape = (_IMAGE_SIZE.value,) * 2 + (3,)
  files = {}
  for b in batch_sizes:
    for name, mode in (('TFLite float32', None), ('TFLite int8', 'full'),
                       ('TFLite int8 dynamic', 'dynamic')):
      blob = tflite.convert(fn, params, shape, batch_size=b, int8=mode is not None,
                            int8_mode=mode or 'full',
                            representative_images=[_images(_CALIBRATION.value, 1)],
                            num_calibration=max(_CALIBRATION.value // b, 1) * b)
      path = os.path.join(out_dir, f"{name.split(' ', 1)[1].replace(' ', '_')}_b{b}.tflite")
      with open(path, 'wb') as f:
        f.write(blob)
      files[name, b] = path
  return files


def _onnx_files(config, params, out_dir):
  """{name: path} of the float, dynamic and static int8 ONNX files (any batch)."""
  fn = classification.forward_fn(models.build(config))
  blob = onnx_export.convert(fn, params, (_IMAGE_SIZE.value,) * 2 + (3,))
  blobs = {'ONNX float32': blob,
           'ONNX int8 dynamic': onnx_export.quantize_dynamic(blob),
           'ONNX int8 static': onnx_export.quantize_static(
               blob, [_images(_CALIBRATION.value, 1)],
               num_calibration=_CALIBRATION.value)}
  files = {}
  for name, data in blobs.items():
    files[name] = os.path.join(out_dir, name.lower().replace(' ', '_') + '.onnx')
    with open(files[name], 'wb') as f:
      f.write(data)
  return files


def _tflite_runner(path, images):
  interp = Interpreter(model_path=path, num_threads=_THREADS.value)
  interp.allocate_tensors()
  inp = interp.get_input_details()[0]
  def run():
    interp.set_tensor(inp['index'], images)
    interp.invoke()
  return run


def main(argv):
  del argv
  print(machine.describe())
  print(f'start: {machine.load()}')
  config = zoo.get(_MODEL.value, image_size=_IMAGE_SIZE.value, head_zeroinit=False)
  params = jax.device_get(jax.jit(lambda k: models.init(config, k))(jax.random.key(0)))
  batch_sizes = sorted(int(b) for b in _BATCHES.value)
  out_dir = _OUT.value or tempfile.mkdtemp(prefix='int8_speed_')
  shape = (_IMAGE_SIZE.value,) * 2 + (3,)

  rows, calls, check = {}, {}, _images(64, 2)
  reference = None
  for name, (fn, p, directory) in _jax_variants(config, params, out_dir).items():
    cost = evaluation.profile(fn, p, image_shape=shape, artifact=directory,
                            batch_sizes=(1,), repeats=1, warmup=1, min_run_s=0.0)
    logits = np.asarray(jax.jit(fn)(p, check))
    reference = logits if reference is None else reference
    rows[name] = {'bytes': cost['bytes'], 'flops': cost['flops'],
                  'err': np.linalg.norm(logits - reference) / np.linalg.norm(reference)}
    jitted, p = jax.jit(fn), jax.device_put(p)
    for b in batch_sizes:
      x = jax.device_put(_images(b, 3))
      calls[name, b] = lambda f=jitted, p=p, x=x: jax.block_until_ready(f(p, x))
  if _TFLITE.value:
    for (name, b), path in _tflite_files(config, params, out_dir, batch_sizes).items():
      calls[name, b] = _tflite_runner(path, _images(b, 3))
      interp = tflite.interpreter(path)
      logits = tflite.predict(interp, check)
      row = rows.setdefault(name, {'bytes': {}, 'flops': None})
      row['bytes'][b] = os.path.getsize(path)
      row['err'] = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
      row['int8 ops'] = tflite.describe(path)
      row['fallback'] = tflite.xnnpack_fallback(path)
  if _ONNX.value:
    for name, path in _onnx_files(config, params, out_dir).items():
      sess = onnx_export.session(path, _THREADS.value)
      for b in batch_sizes:
        x = _images(b, 3)
        calls[name, b] = lambda s=sess, x=x: s.run(None, {onnx_export.INPUT_NAME: x})
      logits = onnx_export.predict(sess, check)
      rows[name] = {'bytes': os.path.getsize(path), 'flops': None,
                    'err': np.linalg.norm(logits - reference) / np.linalg.norm(reference)}
  seconds = {key: t['median'] for key, t in edge.interleaved_seconds(
      calls, rounds=_ROUNDS.value, min_run_s=0.3, warmup=1).items()}

  print(f'end: {machine.load()}\n')
  print(f'{_MODEL.value} at {_IMAGE_SIZE.value} px ({models.count_params(params):,} '
        f'params, {rows["JAX float32"]["flops"] / 1e9:.3f} GFLOPs/img), random '
        f'weights; median of {_ROUNDS.value} interleaved rounds; TFLite and ONNX '
        f'Runtime with {_THREADS.value} threads; {machine.cpu_model()} '
        f'({machine.cpu_flags()}); artifacts in {out_dir}\n')
  base = {b: seconds['JAX float32', b] for b in batch_sizes}
  head = ' | '.join(f'img/s b{b} | vs JAX float b{b}' for b in batch_sizes)
  print(f'| variant | {head} | MiB on disk | logit err. |')
  print('|---|' + '---|---|' * len(batch_sizes) + '---|---|')
  for name, row in rows.items():
    cells = ' | '.join(f'{b / seconds[name, b]:.1f} | {base[b] / seconds[name, b]:.2f}x'
                       for b in batch_sizes)
    size = row['bytes']
    size = (f'{size / 2**20:.2f}' if isinstance(size, int) else
            ' / '.join(f'{v / 2**20:.2f}' for v in size.values()))
    print(f"| {name} | {cells} | {size} | {row['err']:.4f} |")
  for name, row in rows.items():
    if 'int8 ops' in row:
      d = row['int8 ops']
      print(f"{name}: {d['integer_ops']} of {d['ops']} ops integer; outside "
            f"XNNPACK: {row['fallback'] or 'none'}")


if __name__ == '__main__':
  app.run(main)
