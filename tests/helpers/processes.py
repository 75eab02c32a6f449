"""Tests that start fresh interpreters: one per simulated host, or with their
own XLA flags (a forced device count); each prints one `RESULT <json>` line."""
import json
import socket
import subprocess
import sys

from tests.helpers.train_helpers import REPO, subprocess_env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_python(code: str, *args, env=None) -> subprocess.Popen:
  """Runs `python -c code args...` from the repository root on the CPU."""
  return subprocess.Popen([sys.executable, '-c', code, *map(str, args)],
                          cwd=REPO, env=subprocess_env(**(env or {})),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def results(procs, timeout: float = 240):
  """The RESULT json of each process; kills them all on any failure."""
  try:
    out = []
    for proc in procs:
      stdout, stderr = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, stderr[-4000:]
      line = [l for l in stdout.splitlines() if l.startswith('RESULT ')][-1]
      out.append(json.loads(line[len('RESULT '):]))
    return out
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
