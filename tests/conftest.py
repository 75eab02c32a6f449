"""Shared fixtures: the `digits` dataset built once per test session, the tiny
trained ViT of `tests/helpers/tiny_task.py`; a compile cache.

Helper modules live in `tests/helpers/`; the `slow` marker (pytest.ini) names
the integration tests, so `pytest -m "not slow"` runs the unit layer alone."""
import fcntl
import os
import tempfile

import pytest

# Many tests (and the subprocesses they start, which inherit the environment)
# compile the same tiny train steps: XLA's persistent cache compiles each once
# per machine instead of once per test, which is most of a tiny run's time.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'vit_compress_jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# The suite runs what the commands run: their XLA CPU defaults
# (vit_compress/xla_cpu.py), set before the first computation and inherited
# by the subprocesses tests start.
from vit_compress import xla_cpu  # pylint: disable=g-import-not-at-top,wrong-import-position
xla_cpu.apply_defaults()


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A TFDS data_dir with `digits` prepared (offline, a few seconds, once).

  Under pytest-xdist the workers share one copy: the first to take the lock
  builds it, the others find it prepared.
  """
  from vit_compress import data  # pylint: disable=g-import-not-at-top
  shared = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    shared = shared.parent
  data_dir = shared / 'tfds_digits'
  data_dir.mkdir(exist_ok=True)
  with open(shared / 'tfds_digits.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    # `digits` prepares itself on first use, offline, like in a real run.
    data.get_dataset_info('digits', str(data_dir))
    fcntl.flock(lock, fcntl.LOCK_UN)
  return str(data_dir)


@pytest.fixture(scope='module')
def trained():
  """(model config, float params, eval function) of Nano_2 trained on the tiny
  task; trained once per process (`tiny_task.trained_nano` is cached)."""
  from tests.helpers import tiny_task  # pylint: disable=g-import-not-at-top
  return tiny_task.trained_nano()


@pytest.fixture(scope='session')
def digits_run(digits_data_dir, tmp_path_factory):
  """A trained digits model, its test images as files and as an eval batch
  (tests/helpers/predict_run.py), built once per session for the predict tests."""
  from tests.helpers import predict_run  # pylint: disable=g-import-not-at-top
  return predict_run.build(digits_data_dir, tmp_path_factory.mktemp('predict'))
