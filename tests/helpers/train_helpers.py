"""Small experiment configs on the embedded digits data, shared by trainer tests."""
import hashlib
import os
import subprocess
import sys

import ml_collections

from configs import augreg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PP_8PX = 'decode|to_rgb|value_range(-1, 1)|onehot'


def digits_config(data_dir: str, model: str = 'Nano_2', **overrides
                  ) -> ml_collections.ConfigDict:
  """configs/augreg.py's digits setup at the native 8 px, quick to train."""
  config = augreg.get_config(f'{model},digits')
  config.data_dir = data_dir
  config.model.image_size = 8
  config.pp_train = PP_8PX
  config.pp_eval = PP_8PX
  config.total_steps = 20
  config.log_every = 10
  config.eval_every = 10_000   # only at the end
  config.checkpoint_every = 10
  config.schedule.warmup_steps = 5
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def main_command(workdir, data_dir, *flags, model='Nano_2'):
  """`python -m vit_compress.main` on digits at 8 px."""
  return [sys.executable, '-m', 'vit_compress.main',
          f'--config={REPO}/configs/augreg.py:{model},digits',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.model.image_size=8', f'--config.pp_train={PP_8PX}',
          f'--config.pp_eval={PP_8PX}', '--config.schedule.warmup_steps=5',
          *flags]


def subprocess_env(**extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', **extra)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def run_main(workdir, data_dir, *flags, env=None, timeout=300, check=True,
             model='Nano_2'):
  """Runs main_command to completion; raises with its output if it fails."""
  result = subprocess.run(main_command(workdir, data_dir, *flags, model=model),
                          env=subprocess_env(**(env or {})), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
  if check and result.returncode:
    raise AssertionError(f'main failed ({result.returncode}):\n'
                         f'{result.stderr[-3000:]}')
  return result


def snapshot(root):
  """{relative path: sha256} of every file under root."""
  digests = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return digests
