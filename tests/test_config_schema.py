"""The config schema: sections registered once, completed once; one mode
registry; one data-defaults table; configs/common.py found from any copy."""
import inspect
import os
import pathlib
import shutil

from absl import flags
from ml_collections import config_flags
import ml_collections
import pytest

from vit_compress import config_files
from vit_compress import config_sections
from vit_compress import config_schema
from vit_compress import losses
from vit_compress import main
from vit_compress import modes
from vit_compress import optim
from vit_compress import sharding
from vit_compress.compress import quantize
from vit_compress.config_sections import SECTIONS
from vit_compress.data import defaults as data_defaults
from vit_compress.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ sections

def test_every_section_is_registered_once_and_is_in_the_defaults():
  base = config_schema.defaults()
  names = SECTIONS.names()
  assert set(names) == {'optim', 'schedule', 'distill', 'quant', 'distributed',
                        'teacher', 'lit', 'student_init', 'prune', 'mixup'}
  for name in names:
    assert base[name].to_dict() == SECTIONS.get(name).defaults().to_dict(), name
  with pytest.raises(ValueError, match="'optim' is registered twice"):
    config_sections.register('optim', optim.default_optim_config)


def test_complete_runs_each_section_once_and_readers_do_not_again(monkeypatch):
  calls = []
  real = config_sections.with_defaults
  monkeypatch.setattr(config_sections, 'with_defaults',
                      lambda value, defaults, where: calls.append(where) or
                      real(value, defaults, where))
  config = config_schema.defaults()
  config.optim = {'name': 'adamw'}          # partial sections, as files write them
  config.distill = {'temperature': 4.0}
  config.quant = {'weight_dtype': 'int4'}
  done = config_schema.complete(config)
  config_schema.validate(done)
  assert sorted(calls) == sorted(f'config.{n}' for n in SECTIONS.names())
  calls.clear()
  tx, schedule = optim.make_optimizer(done)
  assert losses.distill_config(done).temperature == 4.0
  assert losses.distill_config(done).weight == 1.0   # filled by complete
  assert sharding.initialize_distributed(done) is False
  assert quantize.check(done.quant).weight_dtype == 'int4'
  assert float(schedule(500)) == pytest.approx(0.03)  # the default warm-up end
  assert calls == []   # nothing completed a second time


def test_complete_section_is_the_one_entry_point_for_partial_sections():
  cfg = config_sections.complete_section('optim', {'name': 'adam'})
  assert (cfg.name, cfg.b1, cfg.momentum) == ('adam', 0.9, 0.9)
  with pytest.raises(ValueError, match="Did you mean 'momentum'.*Known: "):
    config_sections.complete_section('optim', {'momentun': 0.5})
  with pytest.raises(ValueError, match=r"config.schedule.base_lr='0.1' must be a "
                     r'number \(its default is 0.03\)'):
    config_sections.complete_section('schedule', {'base_lr': '0.1'})
  # The section's validator runs too (quant: a choice out of its list).
  with pytest.raises(ValueError, match=r"config.quant.weight_dtype='int2'"):
    config_sections.complete_section('quant', {'weight_dtype': 'int2'})
  assert quantize.resolve({'weight_dtype': 'int4'}).to_dict() == (
      config_sections.complete_section('quant', {'weight_dtype': 'int4'}).to_dict())
  with pytest.raises(KeyError, match="Unknown config section 'optm'"):
    config_sections.complete_section('optm', {})


def test_complete_sections_fills_a_hand_built_config():
  config = config_sections.complete_sections(
      {'total_steps': 10, 'optim': {'name': 'adamw'}})
  assert config.total_steps == 10
  assert config.optim.name == 'adamw' and config.optim.eps == 1e-8
  assert config.schedule.to_dict() == optim.default_schedule_config().to_dict()
  assert set(SECTIONS.names()) <= set(config.keys())


# ------------------------------------------------------------------ modes

def test_one_mode_registry():
  assert main.MODES is modes.MODES
  assert modes.MODES.names() == ['recipe', 'train']
  # main attaches what runs for every mode (the names are modes.py's).
  assert all(callable(modes.MODES.get(n).run) for n in modes.MODES.names())
  with pytest.raises(KeyError, match="Unknown mode 'trian'"):
    modes.runs('trian')(lambda config, workdir: None)
  config = config_schema.complete(config_schema.defaults())
  config.mode = 'trian'
  with pytest.raises(ValueError, match="Unknown config.mode 'trian'. Did you "
                     "mean 'train'.*Known: recipe, train"):
    config_schema.validate(config)


# ------------------------------------------------------------------ data keys

def test_data_defaults_are_one_table():
  base = config_schema.defaults()
  table = data_defaults.defaults()
  assert set(table) <= set(base.keys())
  for key, value in table.items():
    got = base[key]
    got = got.get() if hasattr(got, 'get') and not isinstance(got, dict) else got
    want = value.get() if hasattr(value, 'get') and not isinstance(value, dict) else value
    assert got == want, key
  assert base.cache is True   # once False in the pipeline
  # The pipeline reads completed fields: no default of its own to disagree.
  assert 'config.get(' not in inspect.getsource(pipeline)


# ------------------------------------------------------------------ configs/common.py

def _load_with_config_flags(argv_value: str):
  """`--config=<argv_value>` parsed by ml_collections as main.py parses it."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'test', flag_values=values)
  values(['prog', f'--config={argv_value}'])
  return values.config


@pytest.mark.parametrize('name,arg', [('augreg', 'Nano_2,digits'),
                                      ('augreg', 'Ti_16'), ('lowrank', 'digits')])
def test_a_forked_config_elsewhere_finds_common(tmp_path, monkeypatch, name, arg):
  fork = tmp_path / f'my_{name}.py'
  shutil.copy(REPO / 'configs' / f'{name}.py', fork)
  monkeypatch.chdir(tmp_path)   # the working directory is not the checkout
  ours = _load_with_config_flags(f'{REPO}/configs/{name}.py:{arg}')
  theirs = _load_with_config_flags(f'{fork}:{arg}')
  assert theirs.to_dict() == ours.to_dict()
  assert config_files.common_path(str(fork)) == os.path.realpath(
      REPO / 'configs' / 'common.py')


def test_a_common_py_beside_the_fork_wins(tmp_path, monkeypatch):
  fork = tmp_path / 'my_prune.py'
  shutil.copy(REPO / 'configs' / 'prune.py', fork)
  text = (REPO / 'configs' / 'common.py').read_text()
  (tmp_path / 'common.py').write_text(text.replace(
      'config.batch_size = 64', 'config.batch_size = 32'))
  monkeypatch.chdir(tmp_path)
  config = _load_with_config_flags(f'{fork}:Micro_2,digits')
  assert config.batch_size == 32 and config.dataset == 'digits'
  assert config_files.common_path(str(fork)) == os.path.realpath(
      tmp_path / 'common.py')


def test_parse_arg_names_the_file_and_the_variants():
  common = config_files.load_common(str(REPO / 'configs' / 'augreg.py'))
  assert common.parse_arg('Ti_16', 'configs/augreg.py') == ('Ti_16', '')
  assert common.parse_arg('Nano_2,digits', 'x/augreg.py') == ('Nano_2', 'digits')
  with pytest.raises(ValueError, match=r"Unknown variant 'digitz' in "
                     r"'configs/ptq.py:Micro_2,digitz'; the only one is ',digits'"):
    common.parse_arg('Micro_2,digitz', str(REPO / 'configs' / 'ptq.py'))
