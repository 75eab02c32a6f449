"""The commands vit_jax users (and its compression guides) type work as written.

Each command is parsed as `python -m vit_compress.main` parses it (the same
function, on a fresh flag set) and completed as training completes it; the
resolved config is what vit_jax's meaning says. The distillation command also
runs end to end on digits with a tiny saved teacher.
"""
import os

from absl import flags
import jax
import ml_collections
import numpy as np
import pytest
from ml_collections import config_flags

from configs import augreg as augreg_config
from tests.helpers.train_helpers import PP_8PX, REPO
from vit_compress import checkpoint
from vit_compress import config_aliases
from vit_compress import config_schema
from vit_compress import losses
from vit_compress import main
from vit_compress import models
from vit_compress import zoo

AUGREG = os.path.join(REPO, 'configs', 'augreg.py')


def _parse(*argv):
  """The config `python -m vit_compress.main ARGV` trains with."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=fv,
                                  lock_config=True)
  main.parse_config_flags(['main', *argv], fv)
  config = config_schema.complete(fv.config)
  config_schema.validate(config)
  return config


def test_fine_tuning_command_with_vit_jax_keys():
  c = _parse(f'--config={AUGREG}:Ti_16', '--config.dataset=cifar10',
             '--config.base_lr=0.03', '--config.wd=0.03', '--config.do=0.0',
             '--config.sd=0.0')
  assert (c.model.name, c.dataset, c.schedule.base_lr) == ('Ti_16', 'cifar10', 0.03)
  assert c.optim.weight_decay == 0.03
  assert c.model.transformer.dropout_rate == 0.0
  assert c.model.transformer.stochastic_depth == 0.0
  # Values other than the file's show that each alias moves its own key.
  c = _parse(f'--config={AUGREG}:Nano_2,digits', '--config.base_lr=0.02',
             '--config.wd=0.01', '--config.do=0.1', '--config.sd=0.05',
             '--config.warmup_steps=7', '--config.decay_type=linear',
             '--config.grad_norm_clip=2.5', '--config.batch_eval=32',
             '--config.progress_every=5', '--config.optim_dtype=bfloat16',
             '--config.tfds_data_dir=/tmp/tfds', '--config.total_steps=40')
  assert (c.schedule.base_lr, c.optim.weight_decay) == (0.02, 0.01)
  assert (c.model.transformer.dropout_rate,
          c.model.transformer.stochastic_depth) == (0.1, 0.05)
  assert (c.schedule.warmup_steps, c.schedule.decay_type) == (7, 'linear')
  assert (c.optim.grad_clip_norm, c.eval_batch_size, c.log_every) == (2.5, 32, 5)
  assert (c.optim.mu_dtype, c.data_dir, c.total_steps) == ('bfloat16', '/tmp/tfds', 40)


def test_distillation_command_names_the_teacher_and_weight():
  c = _parse(f'--config={AUGREG}:R_Ti_16', '--config.teacher_model=B_16',
             '--config.distill_weight=0.5')
  assert (c.loss, c.distill.weight, c.teacher.model) == ('kd', 0.5, 'B_16')
  # augreg.py trains on ImageNet 2012: the published fine-tuned B/16 teaches.
  assert c.teacher.checkpoint == (
      'gs://vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-'
      'sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz')
  # On another dataset no published teacher fits: the error shows how to make one.
  with pytest.raises(ValueError, match=r'Fine-tune the teacher first: python -m '
                     r'vit_compress.main --config=configs/augreg.py:B_16 .*'
                     r'--config.dataset=cifar10, then pass '
                     r'--config.teacher.checkpoint=/tmp/teacher_B_16/model'):
    _parse(f'--config={AUGREG}:R_Ti_16', '--config.teacher_model=B_16',
           '--config.distill_weight=0.5', '--config.dataset=cifar10')
  with pytest.raises(ValueError, match='no fine-tuned AugReg file of it'):
    _parse(f'--config={AUGREG}:R_Ti_16', '--config.teacher_model=Mixer_B_16')


def test_oom_advice_command_batch_and_accum_steps():
  c = _parse(f'--config={AUGREG}:Ti_16', '--config.batch=128',
             '--config.accum_steps=4')
  assert (c.batch_size, c.optim.accum_steps) == (128, 4)
  with pytest.raises(ValueError, match='accum_steps=3 must be a positive integer '
                     'dividing config.batch_size=128'):
    _parse(f'--config={AUGREG}:Ti_16', '--config.batch=128', '--config.accum_steps=3')


def test_augreg_file_name_picks_model_and_checkpoint():
  name = 'R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0'
  c = _parse(f'--config={AUGREG}:{name}', '--config.batch=64')
  assert c.model.name == 'R_Ti_16'
  assert c.init_from == f'gs://vit_models/augreg/{name}.npz'
  assert c.model.image_size == 384 and c.batch_size == 64
  with pytest.raises(ValueError, match="AugReg file 'Q_16-i21k.*Unknown AugReg model 'Q_16'"):
    augreg_config.get_config('Q_16-i21k-300ep')


def test_alias_with_its_target_is_refused():
  with pytest.raises(ValueError, match="--config.base_lr is vit_jax's name for "
                     '--config.schedule.base_lr, which is given too'):
    _parse(f'--config={AUGREG}:Ti_16', '--config.base_lr=0.1',
           '--config.schedule.base_lr=0.2')
  config = augreg_config.get_config('Ti_16')
  config.base_lr = 0.1           # a file that sets both
  config.schedule.base_lr = 0.2
  with pytest.raises(ValueError, match="base_lr .config file. is vit_jax's name "
                     'for config.schedule.base_lr, which is set too'):
    config_schema.complete(config)


def test_vit_jax_style_config_file():
  """A config written with vit_jax's own keys (and its `pp` section)."""
  config = ml_collections.ConfigDict()
  config.model = 'Nano_2'
  config.base_lr = 0.01
  config.batch = 32
  config.total_steps = 30
  config.pp = ml_collections.ConfigDict({'train': PP_8PX, 'test': PP_8PX})
  c = config_schema.complete(config)
  assert (c.schedule.base_lr, c.batch_size, c.total_steps) == (0.01, 32, 30)
  assert c.pp_train == c.pp_eval == PP_8PX
  assert 'base_lr' not in c and 'pp' not in c
  # pp.resize / pp.crop edit the pp strings' sizes; crop is the model's size.
  c = _parse(f'--config={AUGREG}:Ti_16', '--config.pp.resize=256',
             '--config.pp.crop=224')
  assert c.model.image_size == 224
  assert 'inception_crop(224)' in c.pp_train
  assert 'resize_small(256)|central_crop(224)' in c.pp_eval
  # model_or_filename + pretrained_dir: vit_jax's init checkpoint.
  c = _parse(f'--config={AUGREG}:Ti_16', '--config.pretrained_dir=/data/ckpts',
             '--config.model_or_filename=Ti_16-i21k-300ep')
  assert c.init_from == '/data/ckpts/Ti_16-i21k-300ep.npz'


def test_unknown_key_suggests_the_section_it_lives_in():
  config = augreg_config.get_config('Ti_16')
  config.momentum = 0.5
  with pytest.raises(ValueError, match="Unknown config key 'momentum'.*Did you "
                     "mean 'optim.momentum'"):
    config_schema.complete(config)
  assert "'schedule.base_lr'" in config_aliases.suggest('schedule.base_lrr',
                                                        config_schema.defaults())
  assert "'base_lr' (vit_jax's name for 'schedule.base_lr')" in (
      config_aliases.suggest('base_lrr', config_schema.defaults()))


def test_distill_weight_is_the_guides_alpha():
  """alpha * KL(T) * T^2 + (1 - alpha) * CE, computed here independently."""
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 2
  labels = np.eye(5)[rng.integers(0, 5, 6)]

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
  for alpha, temp in ((0.5, 1.0), (0.9, 4.0), (0.0, 2.0)):
    config = ml_collections.ConfigDict({'distill_weight': alpha})
    config = config_schema.complete(config)   # the alias sets distill.weight
    config.distill.temperature = temp
    loss, _ = losses.kd({'logits': s}, {'labels': labels},
                        teacher={'logits': t}, config=config)
    p, q = log_softmax(t / temp), log_softmax(s / temp)
    kl = np.mean(np.sum(np.exp(p) * (p - q), -1))
    ce = np.mean(-np.sum(labels * log_softmax(s), -1))
    np.testing.assert_allclose(float(loss), alpha * kl * temp**2 + (1 - alpha) * ce,
                               rtol=1e-5)


@pytest.mark.slow
def test_distillation_command_trains_with_kd_from_the_named_teacher(
    digits_data_dir, tmp_path, caplog):
  from vit_compress import sharding  # pylint: disable=g-import-not-at-top
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  teacher = zoo.get('Micro_2')
  checkpoint.save_model(str(tmp_path / 'teacher'),
                        jax.device_get(models.init(teacher, jax.random.key(1))),
                        teacher)

  def command(name):
    return _parse(f'--config={AUGREG}:Nano_2,digits',
                  f'--config.tfds_data_dir={digits_data_dir}', '--config.pp.crop=8',
                  f'--config.pp.train={PP_8PX}', f'--config.pp.test={PP_8PX}',
                  f'--config.teacher_model={name}', '--config.distill_weight=0.5',
                  f'--config.teacher.checkpoint={tmp_path / "teacher"}',
                  '--config.total_steps=10', '--config.progress_every=5',
                  '--config.warmup_steps=2')
  caplog.set_level('INFO')
  config = command('Micro_2')
  assert "vit_jax key teacher_model='Micro_2' (command line) set " \
         "config.teacher.model='Micro_2', config.loss='kd'" in caplog.text
  metrics = train.train_and_evaluate(config, str(tmp_path / 'student'))
  assert metrics['step'] == 10
  assert 'Teacher Micro_2:' in caplog.text
  assert 'train/kd=' in caplog.text and 'train/agreement=' in caplog.text
  # Naming another model than the saved teacher is an error naming both.
  with pytest.raises(ValueError, match="config.teacher.model='Nano_2' but the "
                     f"saved model {tmp_path / 'teacher'} is a 'Micro_2'"):
    train.load_teacher(command('Nano_2'), sharding.make_mesh(config.mesh))


def test_file_alias_of_a_model_key_compares_with_that_models_default():
  config = augreg_config.get_config('L_16')   # L/16's own dropout is 0.1
  config.do = 0.0
  assert config_schema.complete(config).model.transformer.dropout_rate == 0.0
  config = augreg_config.get_config('L_16')
  config.do, config.model.transformer.dropout_rate = 0.0, 0.2
  with pytest.raises(ValueError, match="do .config file. is vit_jax's name for "
                     'config.model.transformer.dropout_rate, which is set too'):
    config_schema.complete(config)


@pytest.mark.parametrize('flags,message', [
    (['--config=configs/augreg.py:Q_16-i21k-300ep-lr_0.001'],
     "error: AugReg file 'Q_16-i21k-300ep-lr_0.001': Unknown AugReg model 'Q_16'."),
    (['--config=configs/augreg.py:Ti_16', '--config.momentum=0.5'],
     "error: --config.momentum: the config has no key 'momentum' there. Did you "
     "mean 'optim.momentum'?"),
], ids=['unknown AugReg model', 'key in a section'])
@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, flags, message):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.helpers.train_helpers import subprocess_env  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, '-m', 'vit_compress.main', f'--workdir={tmp_path / "w"}',
       *flags], env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
      timeout=120)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'w').exists()
