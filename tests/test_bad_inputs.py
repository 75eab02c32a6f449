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
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.train_helpers import REPO, digits_config, run_main, snapshot, subprocess_env
from vit_compress import checkpoint
from vit_compress import cli
from vit_compress import export
from vit_compress import main
from vit_compress import models
from vit_compress import train
from vit_compress import workdir as workdir_lib
from vit_compress import zoo
from vit_compress.compress import shrink_cli

pytestmark = pytest.mark.slow   # integration: see pytest.ini

SECONDS = 60   # generous for a loaded CI machine; a bad run fails before training


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
  five = zoo.get('Nano_2', num_classes=5)
  five.image_size = 8
  checkpoint.save_model(str(root / 'five_classes'), jax.device_get(
      models.init(five, jax.random.key(0))), five)
  (root / 'empty').mkdir()
  _image_folders(root / 'folders')
  return workdir, root


def _image_folders(base):
  """Image-folder datasets with one flaw each: ROOT/train/{a,b}/..."""
  png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
  for flaw in ('empty_class', 'empty_file', 'not_an_image'):
    for c in ('a', 'b'):
      (base / flaw / 'train' / c).mkdir(parents=True)
      if not (flaw == 'empty_class' and c == 'b'):
        (base / flaw / 'train' / c / '0.png').write_bytes(png)
  (base / 'empty_file' / 'train' / 'b' / '1.png').write_bytes(b'')
  (base / 'not_an_image' / 'train' / 'a' / '1.png').write_bytes(b'GIF89a...')


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
    # Splits that select nothing, a best metric no eval records.
    ('empty eval split', {'eval_split': 'test[:0]'},
     r"config\.eval_split='test\[:0\]' selects no examples"),
    ('empty train split', {'train_split': 'train[:0]'},
     r"config\.train_split='train\[:0\]' selects no examples"),
    ('unknown best metric', {'best_metric': 'acc'},
     r"config\.best_metric 'acc'.*Known: accuracy, top5"),
    ('best metric that is not recorded', {'best_metric': 'loss'},
     r"config\.best_metric 'loss'.*accuracy"),
    # Numbers that are not finite or out of range.
    ('learning rate NaN', {'schedule.base_lr': float('nan')},
     r'config\.schedule\.base_lr=nan is not a finite number'),
    ('learning rate Inf', {'schedule.base_lr': float('inf')},
     r'config\.schedule\.base_lr=inf is not a finite number'),
    ('negative learning rate', {'schedule.base_lr': -0.1},
     r'config\.schedule\.base_lr=-0\.1 is out of range.*>= 0'),
    ('negative warmup', {'schedule.warmup_steps': -1},
     r'config\.schedule\.warmup_steps=-1 is out of range'),
    ('end lr ratio above 1', {'schedule.end_lr_ratio': 2.0},
     r'config\.schedule\.end_lr_ratio=2\.0 is out of range.*<= 1'),
    ('negative weight decay', {'optim.weight_decay': -1e-4},
     r'config\.optim\.weight_decay=-0\.0001 is out of range'),
    ('momentum above 1', {'optim.momentum': 1.5},
     r'config\.optim\.momentum=1\.5 is out of range'),
    ('adam b2 above 1', {'optim.b2': 1.5}, r'config\.optim\.b2=1\.5 is out of range'),
    ('zero temperature', {'distill.temperature': 0.0},
     r'config\.distill\.temperature=0\.0 is out of range.*> 0'),
    ('distillation weight above 1', {'distill.weight': 2.0},
     r'config\.distill\.weight=2\.0 is out of range'),
    ('NaN inside a section', {'optim.grad_clip_norm': float('nan')},
     r'config\.optim\.grad_clip_norm=nan is not a finite number'),
    ('keep no checkpoints', {'keep_checkpoints': 0},
     r'config\.keep_checkpoints=0 is out of range'),
    ('zero steps', {'total_steps': 0},
     r'config\.total_steps must be a positive integer, got 0'),
    ('eval every 0 steps', {'eval_every': 0},
     r'config\.eval_every must be a positive integer, got 0'),
    # Teachers and paths of the wrong kind.
    ('teacher of other classes', {'loss': 'kd', 'teacher.checkpoint': '{root}/five_classes'},
     r'predicts 5 classes but the student has 10'),
    ('teacher directory that is no model', {'loss': 'kd', 'teacher.checkpoint': '{root}/empty'},
     r"config\.teacher\.checkpoint='.*empty' is a directory but not a saved model"),
    ('teacher file that is no npz', {
        'loss': 'kd', 'teacher.checkpoint': '{root}/run/model_config.json',
        'teacher.model': 'Nano_2'},
     r'model_config\.json is not an \.npz file'),
    # Image folders that would fail mid-run.
    ('folder with an empty class', {'dataset': 'folder:{root}/folders/empty_class'},
     r'class directory .*empty_class/train/b holds no'),
    ('folder with an empty file', {'dataset': 'folder:{root}/folders/empty_file'},
     r'empty_file/train/b/1\.png is empty'),
    ('folder with a file that is no image', {'dataset': 'folder:{root}/folders/not_an_image'},
     r'not_an_image/train/a/1\.png is not a \.png image'),
    ('folder that does not exist', {'dataset': 'folder:{root}/folders/nope'},
     r"Folder dataset root '.*nope' does not exist"),
    # A rerun that changes what the run is (refused; see test_resume.py).
    ('resume with another optimiser', {'optim.name': 'sgd'},
     r"optim\.name: 'adamw' -> 'sgd'.*--resume_with_changes"),
    ('resume with another seed', {'seed': 7}, r'seed: 0 -> 7'),
    ('resume with pruning added', {'prune.method': 'magnitude'},
     r"prune\.method: 'none' -> 'magnitude'"),
    ('resume with another clip norm', {'optim.grad_clip_norm': 0.5},
     r'optim\.grad_clip_norm: 1\.0 -> 0\.5'),
    ('resume with another batch size', {'batch_size': 32}, r'batch_size: 64 -> 32'),
    ('fewer steps than the workdir has run', {'total_steps': 10},
     r'is at step 20, past config\.total_steps=10'),
    ('resume on another train split', {'train_split': 'train[:50%]'},
     r"train_split: 'train' -> 'train\[:50%\]'"),
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
  before = snapshot(workdir)
  capsys.readouterr()
  start = time.time()
  status = main.run(config, workdir)
  seconds = time.time() - start
  err = capsys.readouterr().err
  assert status == 2, err
  assert err.startswith('error: ') and err.count('error: ') == 1, err
  assert re.search(pattern, err, re.S), err
  assert 'Traceback' not in err and err.count('\n') == 1, err
  assert seconds < SECONDS
  assert snapshot(workdir) == before


def _one_error_line(capsys, pattern):
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert 'Traceback' not in err
  assert re.search(pattern, err, re.S), err


@pytest.mark.parametrize('case', ['locked by a live process', 'a file',
                                  'under a file', 'empty'])
def test_bad_workdir_is_refused(finished, digits_data_dir, case, capsys):
  workdir, root = finished
  lock = os.path.join(workdir, 'LOCK')
  target, pattern = {
      'locked by a live process': (workdir, rf'is in use by process {os.getpid()} '
                                   r'on .*another --workdir.*delete .*LOCK'),
      'a file': (str(root / 'micro.npz'), r'micro\.npz is a file, not a directory'),
      'under a file': (str(root / 'micro.npz' / 'run'), r'micro\.npz is a file'),
      'empty': ('', r'--workdir is empty'),
  }[case]
  if case.startswith('locked'):
    with open(lock, 'w') as f:
      json.dump({'pid': os.getpid(), 'host': os.uname().nodename, 'since': 'now'}, f)
  try:
    before = snapshot(root)
    capsys.readouterr()
    assert main.run(digits_config(digits_data_dir, total_steps=30), target) == 2
    _one_error_line(capsys, pattern)
    assert snapshot(root) == before
  finally:
    if os.path.exists(lock):
      os.remove(lock)


def test_workdir_root_names_its_model(finished):
  workdir, _ = finished
  assert workdir_lib.resolve_model_dir(workdir, 'k') == os.path.join(workdir, 'model')
  model = os.path.join(workdir, 'model')
  assert workdir_lib.resolve_model_dir(model, 'k') == model


@pytest.mark.parametrize('source,pattern', [
    ('empty', r"config\.init_from='.*empty' is a directory but not a saved model"),
    ('micro.npz', r'Transformer/encoderblock_0/.*\(64.*\(32'),
    ('pickled.npz', r'pickled\.npz is not an \.npz file of plain arrays.*never unpickled'),
    ('missing.npz', r"config\.init_from='.*missing\.npz' does not exist"),
], ids=['directory that is no model', 'checkpoint of another shape', 'pickled npz',
        'missing checkpoint'])
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
  before = snapshot(workdir)
  result = run_main(workdir, digits_data_dir, *flags, check=False, timeout=120,
                    env=env)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert re.search(pattern, result.stderr), result.stderr[-2000:]
  assert snapshot(workdir) == before


# Other commands, through the functions their command lines call.
def _shrink(model, out, overwrite=False):
  return lambda: shrink_cli.run(model, out, overwrite)


def _export(workdir, formats=('npz',), **kwargs):
  return lambda: export.command(workdir, list(formats), **kwargs)


def _zoo(models=None, image_size=224, num_classes=1000, jobs=1):
  def run():
    from absl import flags  # the zoo command reads its flags
    values = dict(models=models, image_size=image_size, num_classes=num_classes,
                  jobs=jobs)
    saved = {k: getattr(flags.FLAGS, k) for k in values}
    for k, v in values.items():
      setattr(flags.FLAGS, k, v)
    try:
      zoo.command()
    finally:
      for k, v in saved.items():
        setattr(flags.FLAGS, k, v)
  return run


@pytest.fixture(scope='module')
def zoo_flags():
  from absl import flags
  for name, default in (('image_size', 224), ('num_classes', 1000), ('jobs', None)):
    if name not in flags.FLAGS:
      flags.DEFINE_integer(name, default, '')
  if 'models' not in flags.FLAGS:
    flags.DEFINE_list('models', None, '')
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


COMMAND_CASES = [
    ('shrink: model missing', lambda r: _shrink(f'{r}/nope', f'{r}/out'),
     r"--model='.*nope' does not exist"),
    ('shrink: model is a file', lambda r: _shrink(f'{r}/micro.npz', f'{r}/out'),
     r"--model='.*micro\.npz' is a file, not a saved model directory"),
    ('shrink: model dir that is no model', lambda r: _shrink(f'{r}/empty', f'{r}/out'),
     r"--model='.*empty' is a directory but not a saved model"),
    ('shrink: out is another model', lambda r: _shrink(f'{r}/run/model', f'{r}/five_classes'),
     r'--out=.*five_classes already exists.*--overwrite'),
    ('shrink: out is the input', lambda r: _shrink(f'{r}/run', f'{r}/run/model'),
     r'--out=.*is the input model'),
    ('shrink: out is a file', lambda r: _shrink(f'{r}/run', f'{r}/micro.npz'),
     r'--out=.*micro\.npz is a file'),
    ('shrink: no out', lambda r: _shrink(f'{r}/run', ''), r'--out is required'),
    ('shrink: no model', lambda r: _shrink('', f'{r}/out'), r'--model is required'),
    ('export: no model in the workdir', lambda r: _export(f'{r}/empty'),
     r'No saved model in .*empty'),
    ('export: unknown format', lambda r: _export(f'{r}/run', ['onnx2']),
     r"Unknown export format\(s\) \['onnx2'\]"),
    ('export: no format', lambda r: _export(f'{r}/run', []), r'--format is empty'),
    ('export: no calibration images', lambda r: _export(
        f'{r}/run', ['tflite_int8'], num_calibration=0), r'--num_calibration=0'),
    ('export: model_dir that is no model', lambda r: _export(
        f'{r}/run', model_dir=f'{r}/empty'), r"--model_dir='.*empty' is a directory"),
    ('export: no workdir', lambda r: _export(''), r'--workdir is required'),
    ('export: quantized model', lambda r: _export(f'{r}/run', model_dir=f'{r}/quantized'),
     r'holds a quantized model'),
    ('zoo: unknown model', lambda r: _zoo(['Ti_61']), r"Unknown model 'Ti_61'.*'Ti_16'"),
    ('zoo: zero image size', lambda r: _zoo(['Nano_2'], image_size=0),
     r'--image_size=0 must be a positive integer'),
    ('zoo: zero jobs', lambda r: _zoo(['Nano_2'], jobs=0), r'--jobs=0 must be'),
]


@pytest.mark.parametrize('make,pattern', [c[1:] for c in COMMAND_CASES],
                         ids=[c[0] for c in COMMAND_CASES])
def test_commands_answer_mistakes_with_one_line(finished, zoo_flags, make, pattern,
                                                capsys):
  _, root = finished
  quantized = root / 'quantized'
  if not quantized.exists():   # a saved model whose config says it is quantized
    shutil.copytree(root / 'five_classes', quantized)
    with open(quantized / checkpoint.CONFIG_FILE) as f:
      model_config = json.load(f)
    model_config['quant'] = {'weight_dtype': 'int8'}
    with open(quantized / checkpoint.CONFIG_FILE, 'w') as f:
      json.dump(model_config, f)
  before = snapshot(root)
  capsys.readouterr()
  start = time.time()
  assert cli.report(make(str(root))) == 2
  assert time.time() - start < SECONDS
  _one_error_line(capsys, pattern)
  assert snapshot(root) == before


CONFIG_FILES = [
    ('missing file', '{tmp}/nope.py', r'nope\.py does not exist'),
    ('a directory', '{tmp}', r'is a directory'),
    ('syntax error', '{tmp}/syntax.py', r'syntax\.py line 1 has a syntax error'),
    ('no get_config', '{tmp}/noget.py', r'defines no get_config\(\)'),
    ('import that fails', '{tmp}/badimport.py',
     r'importing .*badimport\.py failed \(ModuleNotFoundError'),
    ('unknown model argument', '{repo}/configs/augreg.py:Ti_17',
     r"Unknown model 'Ti_17'. Did you mean 'Ti_16'.*\(from --config="),
    ('unknown variant', '{repo}/configs/augreg.py:Nano_2,digitz',
     r"Unknown variant 'digitz'"),
]


@pytest.mark.parametrize('spec,pattern', [c[1:] for c in CONFIG_FILES],
                         ids=[c[0] for c in CONFIG_FILES])
def test_config_file_mistakes_are_one_line(tmp_path, spec, pattern):
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'noget.py').write_text('x = 1\n')
  (tmp_path / 'badimport.py').write_text('import no_such_module_anywhere\n')
  spec = spec.format(tmp=tmp_path, repo=REPO)
  message = cli.config_file_error(spec)
  assert message and message.startswith('error: ') and '\n' not in message
  assert re.search(pattern, message), message


def test_good_config_file_passes():
  assert cli.config_file_error(f'{REPO}/configs/augreg.py:Nano_2,digits') is None


@pytest.mark.parametrize('command,pattern', [
    (['-m', 'vit_compress.main', '--config={repo}/configs/augreg.py:Ti_17',
      '--workdir={workdir}'], r"^error: Unknown model 'Ti_17'"),
    (['-m', 'vit_compress.compress.shrink', '--model={workdir}',
      '--out={workdir}/../five_classes'], r'^error: --out=.*already exists'),
], ids=['main: bad config argument', 'shrink: out exists'])
def test_command_lines_exit_2(finished, command, pattern):
  workdir, root = finished
  before = snapshot(root)
  result = subprocess.run(
      [sys.executable] + [c.format(repo=REPO, workdir=workdir) for c in command],
      env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert re.search(pattern, result.stderr, re.M), result.stderr[-2000:]
  assert snapshot(root) == before
