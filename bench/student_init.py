r"""Four students of one size on digits: from scratch or from the teacher,
trained on labels or distilled (KD).

    python bench/student_init.py [--teacher=DIR/teacher/model] \
        [--workdir=/tmp/bench_student_init] [--steps=1000]

The teacher is configs/quickstart.py's (Micro_2: 4 layers, width 64, 4
heads, MLP 256), trained here by its teacher stage unless --teacher names a
saved one. Every student is 2 layers with 2 heads of width 16 and an MLP of
128 (the quickstart's shrunk student's shape), trained with the quickstart's
settings (AdamW, lr 0.003, the same random-crop view for teacher and student)
for --steps steps:

  scratch + labels    random init, cross-entropy on the labels;
  scratch + KD        random init, KL to the teacher (temperature 1);
  teacher + labels    `config.student_init`: the teacher's layers 1 and 3,
                      their 2 heads and 128 neurons of largest magnitude;
  teacher + KD        the same start, distilled.

Prints test top-1 (355 images), parameters and img/s at batch 256 measured
by `eval.profile` (median of the timed runs, one variant after another, so
a loaded machine's noise shows in the img/s; the four models have the same
shape, so their img/s differ only by that noise).
"""
import os
import sys

from absl import flags
from absl import logging

import machine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_compress import cli
from vit_compress import checkpoint
from vit_compress import data
from vit_compress import evaluation
from vit_compress import config_schema
from vit_compress import models
from vit_compress import recipe
from vit_compress import stages
from vit_compress import train
from vit_compress import zoo

flags.DEFINE_string('teacher', None, 'A saved teacher (default: train one).')
flags.DEFINE_string('workdir', '/tmp/bench_student_init', 'Where runs go.')
flags.DEFINE_integer('steps', 1000, 'Training steps per student.')
FLAGS = flags.FLAGS

SHAPE = {'num_layers': 2, 'num_heads': 2, 'mlp_dim': 128, 'head_dim': 16}
INIT = {'layers': 'odd', 'num_heads': 2, 'mlp_dim': 128, 'criterion': 'magnitude'}


def _teacher(base) -> str:
  if FLAGS.teacher:
    return FLAGS.teacher
  base = base.copy_and_resolve_references()
  base.recipe.order = ('teacher',)
  recipe.run(base, FLAGS.workdir)
  return os.path.join(FLAGS.workdir, 'teacher', 'model')


def _student_config(base, teacher: str, init: bool, kd: bool):
  overrides = {'total_steps': FLAGS.steps, 'schedule': {'warmup_steps': 30}}
  if kd:
    overrides.update(loss='kd', distill={'temperature': 1.0, 'weight': 1.0},
                     teacher={'checkpoint': teacher})
  if init:
    overrides.update(init_from=teacher, student_init=INIT)
  else:
    model = zoo.get('Micro_2')
    for key, value in SHAPE.items():
      model.transformer[key] = value
    model.name = 'Micro_2-student'
    overrides['model'] = model
  return stages.experiment_config(base, overrides)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  base = quickstart.get_config()
  teacher = _teacher(base)
  rows = []
  for init in (False, True):
    for kd in (False, True):
      name = f'{"teacher" if init else "scratch"} + {"KD" if kd else "labels"}'
      config = _student_config(base, teacher, init, kd)
      workdir = os.path.join(FLAGS.workdir, name.replace(' + ', '_'))
      train.train_and_evaluate(config, workdir)
      model_config, params = checkpoint.load_model(os.path.join(workdir, 'model'))
      config.model = model_config
      batches = [{k: v for k, v in b.items()}
                 for b in data.make_eval_iterator(config_schema.complete(config))]
      row = evaluation.score_variant(name, models.build(model_config), params, batches,
                                   batch_sizes=(256,), repeats=5, min_run_s=0.1)
      rows.append(row)
  print(f'Students on digits ({FLAGS.steps} steps, teacher {teacher}); '
        f'{machine.describe()}; {machine.load()}')
  print(f'{"student":<18} {"top-1 %":>8} {"params":>8} {"img/s b256":>11}')
  for r in rows:
    print(f'{r["name"]:<18} {r["top1"]:>8.2f} {r["params"]:>8,} '
          f'{r["img_per_s"]:>11,.0f}')


if __name__ == '__main__':
  cli.run_command(main)  # with the XLA CPU defaults the commands set
