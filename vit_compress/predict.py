r"""Predict with any artifact: load it, preprocess, run, read logits or features.

    python -m vit_compress.predict --model=PATH [--top_k=5] \
        [--embeddings_out=F.npy] [--classes=cat,dog] IMAGE...

    p = predict.load(PATH)
    p(['a.png', image_array])    # [[(class name, probability), ...] per image]
    p.embed(images)              # (N, D) pre-logits features, for retrieval
    p.zero_shot(images, ['cat', 'dog'])   # LiT

PATH is a saved model directory (trained, pruned, shrunk, low-rank or
quantized; a training workdir stands for its model/), a compact one-file
artifact (`compress.compact`) - both read by `artifact.load`, the one loader -
or a vit_jax / big_vision `.npz`
(with `--model_name`, unless our export wrote its `.model_config.json`
beside it). The preprocessing and the class names come from the artifact
(`model_config.inference`, written when training saves the model and kept by
every transform), with the label ops (onehot, captions, tokenize) left out.
An artifact saved before they were recorded gets one message saying what to
pass instead (`--pp`, `--class_names`). A plain vit_jax `.npz` has neither:
it gets vit_jax's eval preprocessing at the model's size and numbered
classes, and the log says so.

A `.tflite` or `.onnx` file runs in its own runtime (`predict_runtime`), with
the pp and class names of the `.model_config.json` export writes beside it;
it gives logits, not embeddings.
"""
import os
import sys
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from vit_compress import predictor as predictor_lib

# The Predictor and its pp live in `predictor` (so `predict_runtime` can
# subclass it without importing this loader); the names stay importable here.
Predictor = predictor_lib.Predictor
image_pp = predictor_lib.image_pp


def _npz_model(path: str, model_name: Optional[str], image_size: Optional[int]):
  """(model_config, params) of an .npz: our sidecar config, or a zoo name."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  from vit_compress import checkpoint_files  # pylint: disable=g-import-not-at-top
  from vit_compress import zoo  # pylint: disable=g-import-not-at-top
  from vit_compress.models import families  # pylint: disable=g-import-not-at-top
  sidecar = artifact.sidecar_path(path)
  if tf.io.gfile.exists(sidecar):
    model_config = checkpoint_files.read_model_config(sidecar)
  elif model_name:
    model_config = zoo.get(model_name)
    flat = checkpoint_files.read_npz(path)
    head = next((v for k, v in flat.items() if k.split('/')[-2:] == ['head', 'bias']),
                None)
    if head is not None and families.of(model_config).class_head:
      model_config.num_classes = int(head.shape[-1])
  else:
    raise ValueError(f'{path}: give --model_name (a zoo name such as Ti_16: the '
                     'part of an AugReg file name before the first "-").')
  if image_size:
    model_config.image_size = image_size
  if families.lookup(model_config).text_inputs and not model_config.get('tokenizer_model'):
    from vit_compress.data import tokenizers  # pylint: disable=g-import-not-at-top
    model_config.tokenizer_model = tokenizers.vocab_beside(path, model_config.tokenizer)
  return model_config, checkpoint_files.load_npz(path, model_config)


def load(path: str, *, model_name: Optional[str] = None,
         image_size: Optional[int] = None, pp: Optional[str] = None,
         class_names: Optional[Sequence[str]] = None) -> Predictor:
  """A Predictor for an artifact; `pp` / `class_names` replace what it records."""
  from vit_compress import artifact  # pylint: disable=g-import-not-at-top
  from vit_compress import checkpoint_files  # pylint: disable=g-import-not-at-top
  from vit_compress import models  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if tf.io.gfile.isdir(path) or artifact.is_compact(path):
    # A saved model (a workdir: its model/) or a compact one-file artifact.
    module, params, model_config = artifact.load(path)
    kind = 'saved model'
  elif path.endswith('.npz'):
    model_config, params = _npz_model(path, model_name, image_size)
    module, kind = models.build(model_config), '.npz'
  elif path.endswith(('.tflite', '.onnx')):   # run in LiteRT / ONNX Runtime
    from vit_compress import predict_runtime  # pylint: disable=g-import-not-at-top
    return predict_runtime.load(path, pp=pp, class_names=class_names)
  else:
    raise FileNotFoundError(f'{path} is neither a saved model directory '
                            '(model_config.json + params/), an .npz, a .tflite '
                            'nor an .onnx file.')
  from vit_compress.models import families  # pylint: disable=g-import-not-at-top
  recorded = checkpoint_files.recorded_data(model_config)
  pp = pp or recorded.get('pp_eval')
  names = tuple(class_names or recorded.get('class_names') or ())
  needs_names = not families.lookup(model_config).zero_shot
  if (not pp or (not names and needs_names)) and kind == '.npz':
    size = model_config.image_size
    pp = pp or f'decode|resize({size})|to_rgb|value_range(-1, 1)'
    logging.info('%s records no preprocessing or class names: using %r and '
                 'numbered classes.', path, pp)
  elif not pp or (not names and needs_names):
    raise ValueError(
        f'{path} was saved without its eval preprocessing and class names '
        '(models saved before vit_compress recorded them in '
        "model_config.json's 'inference'): pass --pp='decode|resize(224)|"
        "value_range(-1, 1)' (the config's pp_eval) and --class_names=a,b,... "
        '(or predict.load(path, pp=..., class_names=...)).')
  return Predictor(model_config, module, params, image_pp(pp), names,
                   quantized=model_config.get('quant') is not None)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  images = argv[1:]
  if not images:
    print('error: give one or more image files after the flags.', file=sys.stderr)
    return 2
  try:
    p = load(f.model, model_name=f.model_name, image_size=f.image_size,
             pp=f.pp, class_names=f.class_names)
    if f.classes:
      results = p.zero_shot(images, f.classes, f.top_k)
    elif p.family.zero_shot:
      raise ValueError('a LiT model classifies zero-shot: give --classes=a,b,...')
    else:
      results = p(images, f.top_k)
    if f.embeddings_out:
      features = p.embed(images)
      np.save(f.embeddings_out, features, allow_pickle=False)
      print(f'Wrote {features.shape} embeddings to {f.embeddings_out}.')
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f'error: {e.args[0] if isinstance(e, KeyError) else e}', file=sys.stderr)
    return 2
  for image, top in zip(images, results):
    print(f'{image}: ' + ', '.join(f'{name} {prob:.4f}' for name, prob in top))
  return 0


if __name__ == '__main__':
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('model', None, 'Saved model directory, .npz, .tflite or .onnx file.')
  flags.DEFINE_string('model_name', None, 'Zoo name of an .npz without our config.')
  flags.DEFINE_integer('image_size', None, 'Resolution of an .npz model.')
  flags.DEFINE_integer('top_k', 5, 'Labels printed per image.')
  flags.DEFINE_string('embeddings_out', None, 'Write (N, D) pre-logits features (.npy).')
  flags.DEFINE_list('classes', None, 'LiT zero-shot: the class names to choose from.')
  flags.DEFINE_string('pp', None, "Eval preprocessing, where the artifact has none.")
  flags.DEFINE_list('class_names', None, 'Class names, where the artifact has none.')
  flags.mark_flag_as_required('model')
  from vit_compress import cli  # pylint: disable=g-import-not-at-top
  cli.run_command(lambda argv: sys.exit(main(argv)))
