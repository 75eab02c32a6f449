"""Export a trained model: vit_jax .npz, the compact artifact, TFLite float and int8.

    python -m vit_compress.export --workdir=/tmp/run --format=tflite,tflite_int8 \
        [--config=configs/xyz.py] [--out_dir=...] [--per_channel=false]
    python -m vit_compress.export --model=/tmp/run --input_shape=1,224,224,3 \
        --output_path=/tmp/lite [--checkpoint=... --random_init --threads=2]

The second form is `checkpoint.export_optimized` (vit_compress.edge): TFLite
and ONNX, float and int8, each checked and timed, manifest.json naming the
fastest that passes. The first form:

reads the saved model `{workdir}/model` (what training writes; `--model_dir`
names another) and writes into `{workdir}/export/`:

  npz          model.npz in vit_jax's layout (pre-Linen names), read back by
               `checkpoint_files.load_npz`, with model.model_config.json beside it
               (a pruned model's per-layer widths are not in the file names);
  artifact     artifact/: pruned heads, neurons and layers removed (`shrink`,
               from the zeros that pruning left), then weights quantized
               (config.quant when its mode is 'ptq', else int8 weight-only);
               reloads with `artifact.load`;
  tflite       model_float.tflite;
  tflite_int8  model_int8.tflite, calibrated on training images (the train
               split with the eval preprocessing).

Each TFLite file is run in the interpreter on the eval split and compared
with the JAX model; sizes and accuracies go to export/summary.json.
"""
import json
import os
import sys
from typing import Any, Dict, Iterable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from vit_compress import artifact
from vit_compress import calibration as calibration_lib
from vit_compress import checkpoint_files
from vit_compress import cli
from vit_compress import models
from vit_compress import tflite
from vit_compress import transforms
from vit_compress.evaluation import classification
from vit_compress.compress import structure
from vit_compress.evaluation import profiling
from vit_compress.models import families

MODEL_SUBDIR = checkpoint_files.MODEL_SUBDIR   # re-exported: checkpoint_files.py holds the layout
EXPORT_SUBDIR = 'export'
SUMMARY_FILE = 'summary.json'
FORMATS = ('npz', 'artifact', 'tflite', 'tflite_int8')


# ------------------------------------------------------------------ reading
def find_saved_model(workdir: str) -> str:
  """The saved-model directory in a workdir (or the workdir itself)."""
  found = checkpoint_files.find_model_dir(workdir)
  if found:
    return found
  raise FileNotFoundError(
      f'No saved model in {workdir}: expected {workdir}/{MODEL_SUBDIR}/ (written '
      'when training finishes) holding model_config.json and params/. Finish '
      'training, or pass --model_dir=<a directory written by save_model>.')


def load_float_model(model_dir: str):
  """(model_config, params) of a float saved model; quantized ones are refused."""
  loaded = artifact.load(model_dir, key='--model_dir', require_float=(
      'export the float model it came from (TFLite int8 and the artifact '
      'quantize it themselves; .npz files hold float weights).'))
  return loaded.model_config, loaded.params


# -------------------------------------------------------------------- npz
def export_npz(model_config: ml_collections.ConfigDict, params, path: str) -> Dict[str, Any]:
  """Writes the vit_jax .npz and its model config; checks it reads back equal."""
  checkpoint_files.export_npz(path, params)
  config_path = artifact.sidecar_path(path)
  with tf.io.gfile.GFile(config_path, 'w') as f:
    f.write(model_config.to_json(indent=2))
  loaded = checkpoint_files.load_npz(path, model_config)
  worst = max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
              for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)))
  if worst > 0:
    raise RuntimeError(f'{path} does not read back equal (max difference {worst}).')
  return {'path': path, 'config': config_path, 'bytes': profiling.artifact_bytes(path)}


# --------------------------------------------------------------- artifact
masks_from_zeros = structure.masks_from_zeros   # its home: compress.structure


def export_artifact(model_config: ml_collections.ConfigDict, params, directory: str,
                    *, quant_config=None,
                    calibration_batches: Optional[Iterable[Any]] = None
                    ) -> Dict[str, Any]:
  """Shrinks (ViT) and quantizes; saves with its config. Returns sizes and widths."""
  before = models.count_params(params)
  if families.lookup(model_config).export_shrinks:
    params, model_config = transforms.apply('shrink', params, model_config)
  shrunk = models.count_params(params)
  if quant_config is None or quant_config.get('mode') != 'ptq':
    quant_config = {'mode': 'ptq', 'weight_dtype': 'int8'}
  qparams, qconfig = transforms.apply('quantize', params, model_config,
                                      quant_config=quant_config,
                                      batches=calibration_batches)
  sizes = artifact.save(directory, qparams, qconfig, overwrite=True)
  t = qconfig.get('transformer')
  return {'path': directory, 'bytes': profiling.artifact_bytes(directory),
          'params_before': before, 'params_after_shrink': shrunk,
          'num_heads': t and t.num_heads, 'mlp_dim': t and t.mlp_dim,
          'weight_dtype': qconfig.quant.weight_dtype,
          'act_dtype': qconfig.quant.act_dtype, 'quantization': sizes}


# ----------------------------------------------------------------- TFLite
def export_tflite(model_config: ml_collections.ConfigDict, params, path: str, *,
                  int8: bool = False, int8_mode: str = 'full',
                  representative_images: Optional[Iterable[np.ndarray]] = None,
                  batch_size: int = 1, per_channel: bool = True,
                  int8_io: bool = False) -> Dict[str, Any]:
  """Writes a .tflite of a classifier; returns its path, size and op counts."""
  if not families.lookup(model_config).class_head:
    raise ValueError('TFLite export covers image classifiers; a LiT model has '
                     'two towers and no class logits.')
  module = models.build(model_config)
  size = int(model_config.image_size)
  blob = tflite.convert(classification.forward_fn(module), params, (size, size, 3),
                        batch_size=batch_size, int8=int8, int8_mode=int8_mode,
                        representative_images=representative_images,
                        per_channel=per_channel, int8_io=int8_io)
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(blob)
  artifact.write_sidecar(path, model_config)   # pp and names, for predict
  return {'path': path, 'bytes': len(blob), **tflite.describe(blob)}


def check_tflite(path: str, model_config: ml_collections.ConfigDict, params,
                 make_batches) -> Dict[str, Any]:
  """Interpreter top-1 of the file against the JAX model's on the same batches.

  `make_batches()` returns a fresh iterable of eval batches (it is read twice).
  """
  jax_metrics = classification.accuracy(models.build(model_config), params,
                                        make_batches(), top_k=(1,))
  lite = tflite.accuracy(path, make_batches())
  return {'tflite_top1': lite['top1'], 'jax_top1': jax_metrics['top1'],
          'top1_drop': jax_metrics['top1'] - lite['top1'], 'count': lite['count']}


# ---------------------------------------------------------------- the run
def _eval_batches(config):
  from vit_compress import data  # pylint: disable=g-import-not-at-top
  return lambda: data.make_eval_iterator(config)


def _update_summary(out_dir: str, results: Dict[str, Any]) -> Dict[str, Any]:
  path = os.path.join(out_dir, SUMMARY_FILE)
  summary = {}
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      summary = json.load(f)
  summary.update(results)
  if 'tflite' in summary and 'tflite_int8' in summary:
    summary['tflite_int8_size_ratio'] = (summary['tflite']['bytes'] /
                                         summary['tflite_int8']['bytes'])
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(summary, indent=2, default=str))
  return summary


def run(config: ml_collections.ConfigDict, workdir: str,
        formats: Sequence[str] = ('npz', 'tflite', 'tflite_int8'), *,
        model_dir: Optional[str] = None, out_dir: Optional[str] = None,
        num_calibration: int = 256, per_channel: bool = True,
        check: bool = True) -> Dict[str, Any]:
  """Exports the saved model of `workdir` in `formats` (config: data and quant)."""
  unknown = [f for f in formats if f not in FORMATS]
  if unknown:
    raise ValueError(f'Unknown export format(s) {unknown}; choose from {list(FORMATS)}.')
  model_dir = model_dir or find_saved_model(workdir)
  out_dir = out_dir or os.path.join(workdir, EXPORT_SUBDIR)
  tf.io.gfile.makedirs(out_dir)
  model_config, params = load_float_model(model_dir)
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = model_config
  results = {}
  for fmt in formats:
    logging.info('Exporting %s as %s.', model_dir, fmt)
    if fmt == 'npz':
      results[fmt] = export_npz(model_config, params, os.path.join(out_dir, 'model.npz'))
    elif fmt == 'artifact':
      quant = config.get('quant')
      calibration = None
      if quant is not None and quant.get('act_static'):
        calibration = (dict(image=x) for x in calibration_lib.images(config, num_calibration))
      results[fmt] = export_artifact(model_config, params,
                                     os.path.join(out_dir, 'artifact'),
                                     quant_config=quant, calibration_batches=calibration)
    else:
      int8 = fmt == 'tflite_int8'
      path = os.path.join(out_dir, 'model_int8.tflite' if int8 else 'model_float.tflite')
      results[fmt] = export_tflite(
          model_config, params, path, int8=int8, per_channel=per_channel,
          representative_images=(calibration_lib.images(config, num_calibration)
                                 if int8 else None))
      if check:
        results[fmt].update(check_tflite(path, model_config, params,
                                         _eval_batches(config)))
    logging.info('%s: %s', fmt, results[fmt])
  return _update_summary(out_dir, results)


# -------------------------------------------------------------------- CLI
def _define_flags():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config (data, pp strings, quant); default: '
      'the experiment defaults (digits, 8 px).')
  flags.DEFINE_string('workdir', None, 'Training workdir holding model/.')
  flags.DEFINE_list('format', ['npz', 'tflite', 'tflite_int8'],
                    f'Comma-separated formats: {", ".join(FORMATS)}.')
  flags.DEFINE_string('model_dir', None, 'Saved model to export (default: {workdir}/model).')
  flags.DEFINE_string('out_dir', None, 'Output directory (default: {workdir}/export).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir (overrides config.data_dir).')
  flags.DEFINE_integer('num_calibration', 256, 'Training images calibrating int8.')
  flags.DEFINE_bool('per_channel', True, 'int8 TFLite weights per output channel '
                    '(more accurate; per-tensor makes a small model\'s file smaller).')
  flags.DEFINE_bool('check', True, 'Run each TFLite file on the eval split.')
  # export_optimized (vit_compress.edge): every runtime's artifact, checked and timed.
  flags.DEFINE_string('model', None, 'export_optimized: a zoo name, a saved model '
                      'directory (or workdir), or an .npz; replaces --workdir.')
  flags.DEFINE_list('input_shape', None, 'export_optimized: batch,height,width,3.')
  flags.DEFINE_string('output_path', None, 'export_optimized: output directory.')
  flags.DEFINE_string('checkpoint', None, 'export_optimized: weights of a zoo --model.')
  flags.DEFINE_bool('random_init', False, 'export_optimized: random weights for a '
                    'zoo --model (speed measurements only).')
  flags.DEFINE_integer('num_classes', None, 'export_optimized: classes of a zoo --model.')
  flags.DEFINE_string('dataset', None, 'export_optimized: check and calibration '
                      'dataset when the model records none.')
  flags.DEFINE_integer('threads', None, 'export_optimized: threads (default: all cores).')
  flags.DEFINE_integer('rounds', 7, 'export_optimized: interleaved timing rounds.')


def run_optimized(model: str, input_shape: Sequence[str], output_path: str,
                  verbose: bool = False, **kwargs) -> int:
  """`--model=...`: edge.export_optimized; bad input is one `error:` line, exit 2.

  `input_shape` as the flag gives it (strings); `kwargs` go to export_optimized.
  """
  from vit_compress import edge  # pylint: disable=g-import-not-at-top

  def work():
    if not input_shape or not output_path:
      raise ValueError('--model needs --input_shape=batch,height,width,3 (e.g. '
                       '1,224,224,3) and --output_path=<directory>.')
    try:
      shape = tuple(int(d) for d in input_shape)
    except ValueError:
      raise ValueError(f'--input_shape={",".join(input_shape)}: give integers, '
                       'e.g. --input_shape=1,224,224,3.') from None
    manifest = edge.export_optimized(model, shape, output_path, **kwargs)
    print(json.dumps({k: manifest[k] for k in (
        'chosen', 'fastest_float', 'chosen_speedup_over_fastest_float')}))
  return cli.report(work, verbose)


# What a saved model records about its data (`checkpoint_files.recorded_data`), which
# export scores on unless --config says otherwise.
RECORDED_DATA_KEYS = ('dataset', 'data_dir', 'train_split', 'eval_split', 'pp_eval')


def config_for(model_dir: str, config=None) -> ml_collections.ConfigDict:
  """`config` completed, or the defaults with the dataset, splits and eval
  preprocessing the model's artifact records (so a model is scored on what it
  was trained on)."""
  from vit_compress import config_schema  # pylint: disable=g-import-not-at-top
  if config is not None:
    return ml_collections.ConfigDict(config_schema.complete(config).to_dict())
  config = ml_collections.ConfigDict(config_schema.defaults().to_dict())
  path = os.path.join(model_dir, checkpoint_files.CONFIG_FILE)
  recorded = checkpoint_files.recorded_data(checkpoint_files.read_model_config(path))
  for key in RECORDED_DATA_KEYS:
    if recorded.get(key) is not None:
      config[key] = recorded[key]
  if recorded:
    logging.info('Scoring on %s as recorded in %s.', config.dataset, path)
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if f.model:
    raise SystemExit(run_optimized(
        f.model, f.input_shape, f.output_path, checkpoint_path=f.checkpoint,
        random_init=f.random_init, num_classes=f.num_classes, dataset=f.dataset,
        data_dir=f.data_dir, num_calibration=f.num_calibration, threads=f.threads,
        rounds=f.rounds, verbose=f.verbose))
  sys.exit(cli.report(lambda: command(
      f.workdir, f.format, config=f.config, model_dir=f.model_dir,
      out_dir=f.out_dir, data_dir=f.data_dir, num_calibration=f.num_calibration,
      per_channel=f.per_channel, check=f.check), f.verbose))


def command(workdir, formats, *, config=None, model_dir=None, data_dir=None,
            num_calibration=256, **kwargs) -> None:
  """The command line's work: arguments checked, then `run`; prints the summary."""
  cli.require(workdir, 'workdir', '/tmp/run')
  if not formats:
    raise ValueError(f'--format is empty: give some of {", ".join(FORMATS)}.')
  if num_calibration < 1:
    raise ValueError(f'--num_calibration={num_calibration} must be positive.')
  if model_dir:
    model_dir = artifact.resolve(model_dir, '--model_dir')
  else:
    model_dir = find_saved_model(workdir)
  config = config_for(model_dir, config)
  if data_dir:
    config.data_dir = data_dir
  summary = run(config, workdir, formats, model_dir=model_dir,
                num_calibration=num_calibration, **kwargs)
  print(json.dumps(summary, indent=2, default=str))


if __name__ == '__main__':
  _define_flags()
  cli.define_verbose()
  cli.run_command(main, flags_parser=cli.parse_flags)
