r"""Quickstart: teacher -> distilled, pruned student -> shrink -> int8 -> report.

    python -m vit_compress.main --config=configs/quickstart.py --workdir=/tmp/quickstart

The whole compression path on the embedded `digits` data (8x8 handwritten
digits, no download), with small models, in a few minutes on a 2-core CPU:

  1 teacher  Micro_2 (4 layers, width 64, 4 heads) trained on labels.
  2 student  the teacher's layers 1 and 3 (`config.student_init`, the
             rest copied), distilled from the teacher (KL, both see the same
             random crop) while half of its heads and MLP neurons are pruned
             away (gradual schedule to step 600 of 1000, magnitude; the last
             400 steps distil at the final sparsity). `:scratch` is the
             previous default, the same 2-layer student from random weights.
  3 shrunk   the pruned heads and neurons physically removed.
  4 int8     weights quantized to int8 (post-training, per channel).
  5 report   every variant on the same test split: top-1, agreement with the
             teacher, parameters, size on disk, FLOPs, measured img/s; also the
             teacher with token merging (ToMe, r=2, no training).
             -> report.json, report.md, pareto.png in the workdir.
             All run in JAX; a variant given 'runtime': 'tflite', 'onnx' or
             an int8 file ('onnx_int8_dynamic', ...; see stages.py) is
             scored and timed as that file in its interpreter.
  6 export   the shrunk student as vit_jax model.npz and TFLite float / int8.

Each stage writes workdir/<stage>/ and a DONE marker; rerunning the command
skips what is done, so an interrupted run resumes where it stopped. Shared
settings are top-level (`--config.data_dir=...`); a stage's own ones are
under `--config.recipe.stages.<stage>.config.<key>` (e.g.
`--config.recipe.stages.student.config.total_steps=2000`).

Measured by `python bench/quickstart_seeds.py` (seeds 0, 1, 2, with the
XLA CPU defaults the command sets) on an AMD EPYC (Zen 4, avx512_vnni),
2 cores, quiet (load average 0.3-2; jax 0.10.2), 2026-12-01: the teacher
97.46-98.59 %, the int8 student 97.75-98.87 %, i.e. 0.85, -0.28 and -0.85
points below its teacher on seeds 0, 1, 2; 3.53x-3.82x the teacher's img/s at
batch 256 (the FLOPs ratio is 7.29 / 1.97 MFLOPs = 3.7x) and 11.6x
smaller (one-file compact artifacts: 68 KiB against 794 KiB). With jaxlib's
own XLA flags (YNNPACK dots; logits equal to 1e-6) the same seeds gave
0.56, -0.28 and -0.56 points: one seed's gap moves by a test image or two
when nothing but float rounding changes. The same recipe with 1000 student
steps at the teacher's lr 3e-3 gave 0.85, -0.28 and 2.54 points.
Each test image is 0.28 points: quote ranges over seeds, never one run.
"""
import ml_collections

from vit_compress import config_files
from vit_compress import config_schema
from vit_compress import zoo

common = config_files.load_common(__file__)
# Both models see the same random 8 px crop of the digit upsampled to 10 px
# ("consistent teaching"); evaluation takes the central crop.
PP_TRAIN = common.DIGITS_PP_CROP_TRAIN
PP_EVAL = common.DIGITS_PP_CROP_EVAL


def _student() -> ml_collections.ConfigDict:
  """Micro_2's width and heads in half its depth: 2 layers."""
  model = zoo.get('Micro_2')
  model.transformer.num_layers = 2
  model.name = 'Micro_2-2L'
  return model


def _student_stage(variant: str) -> dict:
  """The distilled, pruned student: started from the teacher's layers 1 and 3
  (default) or, with `:scratch`, from random weights."""
  stage = {
      # 2000 steps at a third of the teacher's lr: 1400 of them distil at the
      # final sparsity, which recovers what pruning cost (bench table above).
      'total_steps': 2000, 'schedule': {'warmup_steps': 30, 'base_lr': 0.001},
      'loss': 'kd', 'distill': {'temperature': 1.0, 'weight': 1.0},
      'teacher': {'checkpoint': 'stage:teacher'},
      'prune': {'method': 'heads_and_neurons', 'criterion': 'magnitude',
                'sparsity': 0.5, 'schedule': 'gradual', 'begin_step': 0,
                'end_step': 600, 'frequency': 10}}
  if variant == 'scratch':
    stage['model'] = _student()
  elif variant == '':
    stage['init_from'] = 'stage:teacher'
    stage['student_init'] = {'layers': 'odd'}
  else:
    raise ValueError(f"configs/quickstart.py:{variant}: use no argument (a "
                     "teacher-initialised student) or ':scratch'.")
  return stage


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  config = config_schema.defaults()
  config.mode = 'recipe'
  # Shared by every stage.
  config.model = zoo.get('Micro_2')
  common.digits(config, pp_train=PP_TRAIN, pp_eval=PP_EVAL)
  config.eval_split = 'test'
  config.eval_batch_size = 128
  config.optim.name = 'adamw'
  config.optim.weight_decay = 1e-4
  config.optim.grad_clip_norm = 1.0
  config.schedule.base_lr = 0.003
  config.log_every = 100
  config.eval_every = 200
  config.checkpoint_every = 200

  recipe = config.recipe
  recipe.order = ('teacher', 'student', 'shrunk', 'int8', 'report', 'export')
  recipe.stages = ml_collections.ConfigDict()
  recipe.stages.teacher = {'kind': 'train', 'config': {
      'model': 'Micro_2', 'total_steps': 800,
      'schedule': {'warmup_steps': 50}}}
  recipe.stages.student = {'kind': 'train', 'config': _student_stage(arg)}
  recipe.stages.shrunk = {'kind': 'shrink', 'input': 'stage:student'}
  recipe.stages.int8 = {'kind': 'quantize', 'input': 'stage:shrunk',
                        'quant': {'weight_dtype': 'int8'}}
  recipe.stages.report = {
      'kind': 'report', 'title': 'Quickstart: digits, 8x8 px',
      'batch_sizes': (1, 256),
      'variants': [
          {'name': 'teacher', 'model': 'stage:teacher'},
          {'name': 'teacher + ToMe r=2', 'model': 'stage:teacher', 'tome_r': 2},
          {'name': 'student (masked)', 'model': 'stage:student'},
          {'name': 'student shrunk', 'model': 'stage:shrunk'},
          {'name': 'student shrunk int8', 'model': 'stage:int8'},
      ]}
  recipe.stages.export = {'kind': 'export', 'input': 'stage:shrunk',
                          'formats': ('npz', 'tflite', 'tflite_int8')}
  return config
