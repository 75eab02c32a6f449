r"""PyTorch's side of `bench/step_profile.py`: where timm's train step spends its time.

    /work/torchenv/bin/python bench/torch_profile.py --batch_size=32 --threads=2

timm's `vit_tiny_patch16_224` (what `bench/vs_pytorch.py` times against our
Ti_16): the same SGD step (forward, backward, `clip_grad_norm_`,
`SGD.step`) or the `inference_mode` forward, run `--steps` times under
`torch.profiler`. Each aten op's self CPU time (exclusive of the ops it
calls) is summed and put in the groups `step_profile.py` uses for XLA's
thunks, read off the op's name. Prints one JSON line (`--json`) or a table.
torch and timm are bench-only: never imported by the package or its tests.
"""
import argparse
import collections
import json
import os
import re
import time

# Group of an aten op, first match wins; the names are step_profile.py's.
_GROUPS = (
    (r'scaled_dot_product|flash_attention', 'attention matmul fused with softmax'),
    (r'addmm|\bmm\b|bmm|matmul|linear|convolution|mkldnn', 'matmul / conv (dot, convolution)'),
    (r'softmax', 'softmax (exp + reduce)'),
    (r'layer_norm', 'LayerNorm / norms (rsqrt)'),
    (r'gelu', 'GELU (tanh / erf)'),
    (r'_foreach|clip_grad|linalg_vector_norm|\bnorm\b', 'optimizer and clipping'),
    (r'\bsum\b|\bmean\b|\bmax\b|nll_loss|reduce', 'other reductions'),
    (r'copy_|clone|contiguous|transpose|permute|\bt\b|cat|stack', 'copy / transpose (layouts)'),
)


def group(op_name: str) -> str:
  name = op_name.replace('aten::', '')
  for pattern, label in _GROUPS:
    if re.search(pattern, name):
      return label
  return 'other elementwise'


def profile(batch_size: int, threads: int, steps: int, work: str):
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = timm.create_model('vit_tiny_patch16_224', pretrained=False)
  opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
  x = torch.randn(batch_size, 3, 224, 224)
  y = torch.randint(0, 1000, (batch_size,))

  def run():
    if work == 'forward':
      model.eval()
      with torch.inference_mode():
        model(x)
      return
    model.train()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  run()
  start = time.perf_counter()
  for _ in range(steps):
    run()
  wall = (time.perf_counter() - start) / steps
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      run()
  groups, ops = collections.Counter(), collections.Counter()
  for event in prof.key_averages():
    if not event.key.startswith('aten::'):
      continue   # autograd / profiler wrappers: their time is in the aten ops
    ms = event.self_cpu_time_total / 1e3 / steps
    groups[group(event.key)] += ms
    ops[event.key] += ms
  return {'wall_ms': wall * 1e3, 'groups': dict(groups),
          'top_ops': ops.most_common(12),
          'version': f'torch {torch.__version__}, timm {timm.__version__}, '
                     f'{torch.get_num_threads()} threads'}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--work', choices=['train', 'forward'], default='train')
  parser.add_argument('--json', action='store_true', help='One JSON line (for step_profile.py).')
  args = parser.parse_args()
  result = profile(args.batch_size, args.threads, args.steps, args.work)
  if args.json:
    print(json.dumps(result))
    return
  total = sum(result['groups'].values())
  print(f"{result['version']}; {args.work}, batch {args.batch_size}: {total:.1f} ms "
        f"of aten self time per step ({result['wall_ms']:.1f} ms wall untraced)\n")
  print('| what | ms/step | share |\n|---|---|---|')
  for g, ms in sorted(result['groups'].items(), key=lambda kv: -kv[1]):
    print(f'| {g} | {ms:.1f} | {100 * ms / total:.1f} % |')
  print_top_ops(result)


def print_top_ops(result) -> None:
  """The ops with the most self time, as a markdown table."""
  print('\n| top PyTorch op | ms/step |\n|---|---|')
  for name, ms in result['top_ops']:
    print(f'| {name} | {ms:.1f} |')


if __name__ == '__main__':
  main()
