"""Our MobileViT gives timm's logits on timm's weights (a check run on purpose).

    PYTHONPATH=$PWD python bench/mobilevit_timm_logits.py [--timm_python=/work/torchenv/bin/python]

Two processes that exchange files: the timm side (a Python with torch + timm,
started as a subprocess) builds `mobilevit_xxs/xs/s` with random weights and
random BatchNorm statistics, saves the state dict as `.safetensors`, and writes
its eval-mode logits on random images; this side imports the file with
`checkpoint.load_timm` (numpy only) and compares logits. 256 px exercises the
plain fold/unfold; 224 px makes the last stage's 7x7 map resize to 8x8 and back.
torch and timm are never imported by the package.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

MODELS = {'mobilevit_xxs': 'MobileViT_XXS', 'mobilevit_xs': 'MobileViT_XS',
          'mobilevit_s': 'MobileViT_S'}
SIZES = (256, 224)
BATCH = 4


def timm_side(workdir: str) -> None:
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  for name in MODELS:
    model = timm.create_model(name).eval()
    with torch.no_grad():
      for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial statistics
          mod.running_mean.normal_(0, 0.1)
          mod.running_var.uniform_(0.5, 1.5)
          mod.weight.uniform_(0.5, 1.5)
          mod.bias.normal_(0, 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(workdir, f'{name}.safetensors'))
    for size in SIZES:
      images = np.random.RandomState(size).uniform(
          -1, 1, (BATCH, size, size, 3)).astype(np.float32)
      with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
      np.savez(os.path.join(workdir, f'{name}_{size}.npz'), images=images,
               logits=logits)


def our_side(workdir: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import machine  # pylint: disable=g-import-not-at-top
  from vit_compress import checkpoint, models, zoo  # pylint: disable=g-import-not-at-top
  print(machine.describe())
  print(f'{"model":<15} {"px":>4} {"max |diff|":>11} {"max |logit|":>12} {"top-1 equal":>12}')
  for name, ours in MODELS.items():
    for size in SIZES:
      config = zoo.get(ours, image_size=size)
      params = checkpoint.load_timm(os.path.join(workdir, f'{name}.safetensors'),
                                    config)
      ref = np.load(os.path.join(workdir, f'{name}_{size}.npz'), allow_pickle=False)
      logits = np.asarray(jax.jit(models.build(config).apply)(
          {'params': params}, ref['images']))
      diff = np.abs(logits - ref['logits']).max()
      same = (logits.argmax(-1) == ref['logits'].argmax(-1)).mean()
      print(f'{name:<15} {size:>4} {diff:>11.2e} '
            f'{np.abs(ref["logits"]).max():>12.3f} {same:>12.0%}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--timm_python', default='/work/torchenv/bin/python')
  parser.add_argument('--timm_side', metavar='DIR', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.timm_side:
    timm_side(args.timm_side)
    return
  if not os.path.exists(args.timm_python):
    print(f'error: --timm_python={args.timm_python} does not exist; give a '
          'Python with torch and timm installed.', file=sys.stderr)
    sys.exit(2)
  with tempfile.TemporaryDirectory() as workdir:
    subprocess.run([args.timm_python, os.path.abspath(__file__),
                    '--timm_side', workdir], check=True)
    our_side(workdir)


if __name__ == '__main__':
  main()
