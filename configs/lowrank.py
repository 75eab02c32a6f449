r"""Low-rank factorisation of a trained ViT's MLPs, then fine-tuning.

    python -m vit_compress.main --config=configs/lowrank.py --workdir=/tmp/lowrank

A recipe (config.mode='recipe'; stages in workdir/<stage>/, skipped once
done) on the embedded `digits` data, on a CPU:

  teacher   Micro_2 trained on labels (the quickstart's teacher stage).
  lowrank   every MLP kernel (Dense_0 and Dense_1 of each block, chosen by
            `params_regex` over parameter paths) replaced by its best rank-r
            approximation, kernel_a (in, r) @ kernel_b (r, out) from a
            truncated SVD, with r so that the two factors hold `ratio` of the
            kernel's parameters (`energy=0.95` instead keeps 95 % of the
            squared singular values). No training.
  finetune  the factorised model trained further (init_from 'stage:lowrank';
            the stage trains the saved model's own architecture), distilled
            from the teacher so it recovers what the factorisation lost.
  report    teacher, factorised and fine-tuned on the test split: top-1,
            agreement, parameters, bytes, FLOPs, measured img/s.

`python -m vit_compress.compress.lowrank --model=... --out=... --ratio=0.5`
does the lowrank stage alone on any saved model.

Measured over seeds 0-2 (`--config.seed=N`; AMD EPYC Zen 4, 2 cores shared
with other jobs, so the img/s are noise, not a speed-up; jax 0.10.2):
teacher (Micro_2, 202,698 parameters) 98.03-99.15 % top-1; factorised at
ratio 0.25 with no training (102,346 parameters, 3.88 vs 7.29 MFLOPs per
image, one-file artifact 402 vs 793 KiB) 96.90-97.18 %; fine-tuned 400 steps
by distillation 98.59-98.87 %, i.e. from 0.56 points above to 0.28 below its own
teacher. Seed 0 ran on a loaded machine, seeds 1-2 side by side.
"""
import ml_collections

from vit_compress import config_files

# quickstart.py beside this file, else the checkout's (forks work anywhere).
quickstart = config_files.load_beside(__file__, 'quickstart')

RATIO = 0.25   # each MLP kernel keeps a quarter of its parameters


def get_config(arg: str = 'digits') -> ml_collections.ConfigDict:
  if arg not in ('', 'digits'):
    raise ValueError(f"configs/lowrank.py:{arg}: only the 'digits' (CPU) "
                     'variant exists.')
  config = quickstart.get_config()   # its shared settings and teacher stage
  recipe = config.recipe
  teacher = recipe.stages.teacher
  recipe.order = ('teacher', 'lowrank', 'finetune', 'report')
  recipe.stages = ml_collections.ConfigDict()
  recipe.stages.teacher = teacher
  recipe.stages.lowrank = {'kind': 'lowrank', 'input': 'stage:teacher',
                           'ratio': RATIO}
  recipe.stages.finetune = {'kind': 'train', 'config': {
      'init_from': 'stage:lowrank', 'total_steps': 400,
      'schedule': {'warmup_steps': 20, 'base_lr': 0.001},
      'loss': 'kd', 'distill': {'temperature': 1.0, 'weight': 1.0},
      'teacher': {'checkpoint': 'stage:teacher'}}}
  recipe.stages.report = {
      'kind': 'report', 'title': f'Low-rank MLPs (ratio {RATIO}): digits, 8x8 px',
      'batch_sizes': (1, 256),
      'variants': [
          {'name': 'teacher', 'model': 'stage:teacher'},
          {'name': f'low-rank {RATIO}', 'model': 'stage:lowrank'},
          {'name': f'low-rank {RATIO} fine-tuned', 'model': 'stage:finetune'},
      ]}
  return config
