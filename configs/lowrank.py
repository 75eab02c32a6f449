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

Measured once (seed 0; AMD EPYC, 2 cores shared with other jobs, load
average about 15, so the img/s are noise, not a speed-up; jax 0.10): the
teacher 99.15 % top-1 (202,698 parameters), factorised at ratio 0.25 with no
training 97.18 % (102,346 parameters, 3.88 vs 7.29 MFLOPs per image, one-file
artifact 0.392 vs 0.775 MiB), fine-tuned 400 steps by distillation 98.87 %
(agrees with the teacher on 98.59 % of the 355 test images). One run, one
seed: a range over seeds is not measured yet.
"""
import ml_collections

from configs import quickstart

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
