"""Bad input fails fast with a message naming the problem and the fix, and the
workdir is left exactly as it was.

Each case gets a small digits config wrong the way a user might, then runs it
through `main.run` (what `python -m vit_compress.main` calls once the flags are
parsed) against a workdir holding a finished 20-step run. The config asks for
30 steps, so a case that slipped through would train and change the workdir.
Every case must return 2, print one `error:` line matching its pattern, and
leave every file of the workdir byte-identical. Cases about a fresh start
(`init_from`) use an empty workdir, which must stay empty.
"""
import hashlib
import os
import re
import time

import jax
import ml_collections
import numpy as np
import pytest

from train_helpers import digits_config, run_main
from vit_compress import checkpoint
from vit_compress import main
from vit_compress import models
from vit_compress import train
from vit_compress import zoo

SECONDS = 60   # generous for a loaded CI machine; a bad run fails before training


def _snapshot(root):
  """{relative path: sha256} of every file under root."""
  digests = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return digests


@pytest.fixture(scope='module')
def finished(digits_data_dir, tmp_path_factory):
  """A workdir with a finished 20-step Nano_2 run, and npz files of other models."""
  root = tmp_path_factory.mktemp('bad_inputs')
  workdir = str(root / 'run')
  train.train_and_evaluate(digits_config(digits_data_dir), workdir)
  micro = zoo.get('Micro_2', num_classes=10)
  micro.image_size = 8
  params = jax.device_get(models.init(micro, jax.random.key(0)))
  checkpoint.export_npz(str(root / 'micro.npz'), params)
  np.savez(root / 'pickled.npz', embedding=np.array([{'kernel': 1}], dtype=object))
  return workdir, root


def _set(config, key, value):
  node = config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value


# (id, {dotted key: value}, pattern of the error line). '{root}' and
# '{data_dir}' are filled in from the fixtures.
CASES = [
    ('misspelled key', {'total_stpes': 30},
     r"Unknown config key 'total_stpes'.*Did you mean 'total_steps'"),
    ('misspelled section key', {'optim.momentun': 0.5},
     r"config\.optim.*'momentun'.*Did you mean 'momentum'"),
    ('section with a misspelled name', {'schedul': {'base_lr': 0.1}},
     r"Unknown config key 'schedul'.*'schedule'"),
    ('steps as a string', {'total_steps': '30'},
     r"config\.total_steps='30' must be a number"),
    ('learning rate as a string', {'schedule.base_lr': 'fast'},
     r"config\.schedule\.base_lr='fast' must be a number"),
    ('negative batch size', {'batch_size': -8},
     r'config\.batch_size must be a positive integer, got -8'),
    ('unknown model', {'model': 'Ti_61'},
     r"Unknown model 'Ti_61'.*Did you mean 'Ti_16'"),
    ('unknown dataset', {'dataset': 'digts'},
     r"digts.*Did you mean 'digits'"),
    ('dataset not prepared', {'dataset': 'cifar10', 'data_dir': '{root}/empty'},
     r"'cifar10' is not prepared in '.*empty'.*tfds build cifar10"),
    ('unknown split', {'train_split': 'trian'},
     r"trian.*'train'"),
    ('unknown preprocessing op', {'pp_train': 'decode|resise(8)|to_rgb|onehot'},
     r"Unknown preprocessing op 'resise'. Did you mean 'resize'"),
    ('pp string that does not parse', {'pp_train': 'decode|resize(8|to_rgb'},
     r"Cannot parse preprocessing op 'resize\(8\|to_rgb'.*never closed"),
    ('images of another size than the model', {
        'pp_train': 'decode|resize(16)|to_rgb|value_range(-1, 1)|onehot'},
     r'16x16 images but config\.model\.image_size is 8'),
    ('patch that does not divide the image', {'model.patches.size': (3, 3)},
     r'patches\.size=\(3, 3\) does not divide config\.model\.image_size=8'),
    ('mesh larger than the machine', {'mesh': (('data', 4),)},
     r"mesh.*4 devices.*1"),
    ('unknown sharding preset', {'sharding_rules': 'fsdb'},
     r"fsdb.*Did you mean 'fsdp'"),
    ('unknown loss', {'loss': 'softmax_xnet'},
     r"Unknown loss 'softmax_xnet'.*Did you mean 'softmax_xent'"),
    ('distillation without a teacher', {'loss': 'kd'},
     r"config\.loss='kd' distils from a teacher: set config\.teacher\.checkpoint"),
    ('teacher that does not exist', {'loss': 'kd', 'teacher.checkpoint': '{root}/nope'},
     r"config\.teacher\.checkpoint='.*nope' does not exist"),
    ('teacher npz without its architecture', {
        'loss': 'kd', 'teacher.checkpoint': '{root}/micro.npz'},
     r'config\.teacher\.model'),
    ('unknown optimizer', {'optim.name': 'adamw2'},
     r"adamw2.*Did you mean 'adamw'"),
    ('unknown lr decay', {'schedule.decay_type': 'cosin'},
     r"cosin.*Did you mean 'cosine'"),
    ('accumulation that does not divide the batch', {'optim.accum_steps': 3},
     r'accum_steps=3 must be a positive integer dividing config\.batch_size=64'),
    ('sparsity of 1', {'prune.method': 'magnitude', 'prune.sparsity': 1.0},
     r'config\.prune\.sparsity=1\.0 must be in \[0, 1\)'),
    ('negative sparsity', {'prune.method': 'magnitude', 'prune.sparsity': -0.1},
     r'config\.prune\.sparsity=-0\.1 must be in \[0, 1\)'),
    ('unknown pruning method', {'prune.method': 'heds'},
     r"heds.*Did you mean 'heads'"),
    ('N:M with N >= M', {'prune.method': 'n_m', 'prune.n': 4, 'prune.m': 4},
     r'n=4.*m=4'),
    ('low-rank rank larger than the layer', {
        'model.transformer.lowrank': {'mlp_rank_0': 100}},
     r'mlp_rank_0=100 in layer 0 is larger than the layer.*at most \d+'),
    ('unknown quantization type', {'quant.mode': 'qat', 'quant.weight_dtype': 'int3'},
     r"int3.*'int4'"),
    ('static scales without quantized activations', {
        'quant.mode': 'ptq', 'quant.act_static': True},
     r"act_static=True needs act_dtype='int8'"),
    ('unknown mode', {'mode': 'trian'},
     r"Unknown mode 'trian'. Did you mean 'train'"),
    ('a workdir of another model', {'model': zoo.get('Micro_2', num_classes=10)},
     r"holds checkpoints of model 'Nano_2', not of 'Micro_2'.*Nothing was written"),
]


def _fill(value, root, data_dir):
  if isinstance(value, str):
    return value.format(root=root, data_dir=data_dir)
  return value


@pytest.mark.parametrize('edits,pattern', [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_and_leaves_the_workdir(
    finished, digits_data_dir, edits, pattern, capsys):
  workdir, root = finished
  config = digits_config(digits_data_dir, total_steps=30)
  # As a config file would build it: any value may have any type.
  config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for key, value in edits.items():
    _set(config, key, _fill(value, root, digits_data_dir))
  before = _snapshot(workdir)
  capsys.readouterr()
  start = time.time()
  status = main.run(config, workdir)
  seconds = time.time() - start
  err = capsys.readouterr().err
  assert status == 2, err
  assert err.startswith('error: ') and err.count('error: ') == 1, err
  assert re.search(pattern, err, re.S), err
  assert 'Traceback' not in err
  assert seconds < SECONDS
  assert _snapshot(workdir) == before


@pytest.mark.parametrize('source,pattern', [
    ('micro.npz', r'Transformer/encoderblock_0/.*\(64.*\(32'),
    ('pickled.npz', r'pickled\.npz is not an \.npz file of plain arrays.*never unpickled'),
    ('missing.npz', r"config\.init_from='.*missing\.npz' does not exist"),
], ids=['checkpoint of another shape', 'pickled npz', 'missing checkpoint'])
def test_bad_init_from_writes_nothing(finished, digits_data_dir, tmp_path, source,
                                      pattern, capsys):
  _, root = finished
  config = digits_config(digits_data_dir, init_from=str(root / source))
  workdir = tmp_path / 'fresh'
  assert main.run(config, str(workdir)) == 2
  assert re.search(pattern, capsys.readouterr().err)
  assert not workdir.exists() or not os.listdir(workdir)


@pytest.mark.parametrize('flags,env,pattern', [
    (['--config.total_stepz=30'], {},
     r"error: --config\.total_stepz: the config has no key 'total_stepz' there\. "
     r'Did you mean "total_steps"'),
    (['--config.total_steps=many'], {},
     r'error: flag --config\.total_steps=many: invalid literal for int'),
    (['--config.batch_size=12', '--config.total_steps=30'],
     {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
     r'error: config\.batch_size=12 .*8'),
], ids=['override of a misspelled key', 'override of the wrong type',
        'batch not divisible by the devices'])
def test_cli_fails_fast_and_leaves_the_workdir(finished, digits_data_dir, flags,
                                               env, pattern):
  workdir, _ = finished
  before = _snapshot(workdir)
  result = run_main(workdir, digits_data_dir, *flags, check=False, timeout=120,
                    env=env)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert re.search(pattern, result.stderr), result.stderr[-2000:]
  assert _snapshot(workdir) == before
