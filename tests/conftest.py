"""Shared fixtures: the `digits` dataset built once per test session; a compile cache."""
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
