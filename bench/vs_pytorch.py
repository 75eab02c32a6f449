r"""Our jitted train step and forward against timm's ViT-Ti/16 (PyTorch eager), on one CPU.

    python bench/vs_pytorch.py --torch_python=/work/torchenv/bin/python
    python bench/vs_pytorch.py --threads=1 --batch_sizes=1,32 --rounds=5

Two processes, same work: this one (JAX: `Ti_16` from the zoo, random
weights) and a worker started under `--torch_python` (`timm`'s
`vit_tiny_patch16_224`: the same architecture, 5.7 M parameters, exact GELU,
fused attention), which re-runs this file with `--torch` and answers timing
requests over a pipe. Both are pinned to the same `--threads` cores
(`sched_setaffinity`, set before either library starts its thread pool; XLA
sizes its pool from the affinity mask, torch also gets `set_num_threads`).
Rounds alternate JAX, torch, JAX, ... so both see the same machine load;
each round times `--iters` calls (at least 2 s) and keeps their median; the
table shows the median over rounds.

Work per batch size:
  train   one SGD step (momentum 0.9, global-norm clipping at 1.0, softmax
          cross-entropy, 1000 classes): ours is `train.make_train_step` on
          configs/augreg.py's recipe, jitted with donated state; torch's is
          forward, backward, `clip_grad_norm_`, `SGD.step` in train mode;
  forward float32 inference: ours jitted, torch's under `inference_mode`.
torch and timm are used by this bench only (`pip install .[bench]`).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
_CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16',
              'amx_tile', 'amx_bf16')


def cpu_line() -> str:
  """CPU model and the vector flags that matter for float matmuls."""
  model, flags = platform.processor(), set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() == 'flags':
          flags = set(value.split())
  except OSError:
    pass
  have = [f for f in _CPU_FLAGS if f in flags]
  return f"{model}, {os.cpu_count()} cores, flags: {' '.join(have) or 'n/a'}"


# ------------------------------------------------------------------- torch half
def _torch_worker(threads: int):
  """Reads {'work', 'batch'} lines on stdin, answers {'seconds'}; `--torch` mode."""
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = timm.create_model('vit_tiny_patch16_224', pretrained=False)
  opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
  fns = {}

  def make(work, b):
    x = torch.randn(b, 3, 224, 224)
    y = torch.randint(0, 1000, (b,))
    if work == 'forward':
      def forward():
        model.eval()
        with torch.inference_mode():
          model(x)
      return forward

    def train():
      model.train()
      opt.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(model(x), y).backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
    return train

  print(json.dumps({'ready': f'torch {torch.__version__}, timm {timm.__version__}, '
                    f'{torch.get_num_threads()} threads'}), flush=True)
  for line in sys.stdin:
    req = json.loads(line)
    key = (req['work'], req['batch'])
    if key not in fns:
      fns[key] = make(*key)
      fns[key]()  # warm-up
    seconds = timing.median_call_seconds(fns[key], req['min_seconds'], req['min_iters'])
    print(json.dumps({'seconds': seconds}), flush=True)


class TorchProcess:
  """The torch worker: this file under `--torch_python`, pinned like us."""

  def __init__(self, python: str, threads: int):
    self.proc = subprocess.Popen(
        [python, os.path.abspath(__file__), '--torch', f'--threads={threads}'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.version = self._read()['ready']

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError('the torch worker exited; run it alone to see why: '
                         f'{self.proc.args[0]} {__file__} --torch')
    return json.loads(line)

  def seconds(self, work, batch, min_seconds, min_iters) -> float:
    self.proc.stdin.write(json.dumps({'work': work, 'batch': batch,
                                      'min_seconds': min_seconds,
                                      'min_iters': min_iters}) + '\n')
    self.proc.stdin.flush()
    return self._read()['seconds']

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


# --------------------------------------------------------------------- JAX half
class JaxWork:
  """Our jitted train step (the trainer's) and forward for one batch size."""

  def __init__(self, batch: int, model: str):
    import jax  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, os.path.dirname(_HERE))
    import train_step  # pylint: disable=g-import-not-at-top
    from configs import augreg  # pylint: disable=g-import-not-at-top
    from vit_compress import train  # pylint: disable=g-import-not-at-top
    config = augreg.get_config(model)
    config.schedule.warmup_steps = 0  # a real learning rate from step 0
    self.step, self.state, self.batch, module, m = train_step.build(
        config, batch, 224)
    self.compiled = self.step.lower(self.state, self.batch, {}).compile()
    forward = jax.jit(lambda p, x: train.model_outputs(
        module, m, p, x, train=False)['logits'])
    # The state is donated to each step: read the current parameters.
    self.forward = lambda: jax.block_until_ready(
        forward(self.state['params'], self.batch))
    self.forward()
    self.train()

  def train(self):
    import jax  # pylint: disable=g-import-not-at-top
    self.state, metrics = self.compiled(self.state, self.batch, {})
    jax.block_until_ready((self.state, metrics))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--torch_python', default='/work/torchenv/bin/python',
                      help='A python with torch and timm (pip install .[bench]).')
  parser.add_argument('--threads', type=int, default=os.cpu_count(),
                      help='Cores both frameworks are pinned to.')
  parser.add_argument('--batch_sizes', default='1,32')
  parser.add_argument('--works', default='forward,train')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--min_seconds', type=float, default=2.0)
  parser.add_argument('--min_iters', type=int, default=3)
  parser.add_argument('--model', default='Ti_16', help='Our zoo model (timm: ViT-Ti/16).')
  parser.add_argument('--jaxlib_defaults', action='store_true',
                      help="JAX with jaxlib's XLA flags, not the CPU defaults our "
                      'commands add (vit_compress/xla_cpu.py).')
  parser.add_argument('--torch', action='store_true', help='Internal: torch worker.')
  args = parser.parse_args()
  cores = sorted(os.sched_getaffinity(0))[:args.threads]
  os.sched_setaffinity(0, cores)  # before any thread pool exists; inherited
  if args.torch:
    _torch_worker(args.threads)
    return

  if not args.jaxlib_defaults:  # what `python -m vit_compress.main` runs
    sys.path.insert(0, os.path.dirname(_HERE))
    from vit_compress import xla_cpu  # pylint: disable=g-import-not-at-top
    xla_cpu.apply_defaults()
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  print(cpu_line())
  print(f'pinned to cores {cores}; jax {jax.__version__} (jaxlib '
        f"{jaxlib.__version__}), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f'start: load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
  torch_proc = TorchProcess(args.torch_python, args.threads)
  print(torch_proc.version)
  works = args.works.split(',')
  rows = []
  for batch in (int(b) for b in args.batch_sizes.split(',')):
    ours = JaxWork(batch, args.model)
    times = {(w, f): [] for w in works for f in ('jax', 'torch')}
    for _ in range(args.rounds):
      for w in works:
        times[(w, 'jax')].append(timing.median_call_seconds(
            getattr(ours, w), args.min_seconds, args.min_iters))
        times[(w, 'torch')].append(torch_proc.seconds(
            w, batch, args.min_seconds, args.min_iters))
    for w in works:
      jax_s = statistics.median(times[(w, 'jax')])
      torch_s = statistics.median(times[(w, 'torch')])
      rows.append((w, batch, batch / torch_s, batch / jax_s, torch_s / jax_s,
                   [batch / t for t in times[(w, 'jax')]]))
    del ours
  torch_proc.close()
  print(f'end: load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}\n')
  print(f'{args.model} / vit_tiny_patch16_224 at 224 px, float32, {args.threads} '
        f'thread(s) each; median of {args.rounds} interleaved rounds\n')
  print('| work | batch | PyTorch eager img/s | vit_compress (JAX) img/s | ratio '
        '| JAX rounds min-max img/s |')
  print('|---|---|---|---|---|---|')
  for w, b, t, j, ratio, per_round in rows:
    print(f'| {w} | {b} | {t:.1f} | {j:.1f} | {ratio:.2f}x | '
          f'{min(per_round):.1f}-{max(per_round):.1f} |')


if __name__ == '__main__':
  main()
