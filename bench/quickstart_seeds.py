r"""The quickstart over several seeds: teacher vs int8 student, as a table.

    python bench/quickstart_seeds.py [--seeds=0,1,2] [--variant=scratch] \
        [--workdir=/tmp/bench_quickstart_seeds]

Runs configs/quickstart.py (teacher, student, shrunk, int8, report; no
export) once per seed in `{workdir}/seed{N}` (`config.seed` is shared by
every stage: the teacher changes too). A finished seed is read back, not
rerun. Prints per seed: teacher and int8-student top-1 over the 355 test
images (one image is 0.28 points), the gap, the int8 student's measured
img/s at batch 256 over the teacher's (the report's medians over
interleaved rounds), and how many times smaller its one-file compact
artifact is than the teacher's; then the range over seeds. XLA's CPU results
differ between CPU types, so quote the range and the machine, never one run.
It runs with the XLA CPU defaults `python -m vit_compress.main` sets
(vit_compress/xla_cpu.py), so its numbers are the quickstart command's.
"""
import json
import os
import sys

from absl import flags
from absl import logging

import machine

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # pylint: disable=g-import-not-at-top,wrong-import-position
from vit_compress import cli
from vit_compress import recipe

flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (config.seed).')
flags.DEFINE_string('variant', '', "configs/quickstart.py's argument: '' (the "
                    "teacher-initialised student) or 'scratch'.")
flags.DEFINE_string('workdir', '/tmp/bench_quickstart_seeds', 'One subdirectory per seed.')
FLAGS = flags.FLAGS

STUDENT = 'student shrunk int8'


def run_seed(seed: int) -> dict:
  config = quickstart.get_config(FLAGS.variant)
  config.seed = seed
  config.recipe.order = ('teacher', 'student', 'shrunk', 'int8', 'report')
  workdir = os.path.join(FLAGS.workdir, f'{FLAGS.variant or "init"}_seed{seed}')
  recipe.run(config, workdir)
  with open(os.path.join(workdir, 'report.json')) as f:
    rows = {r['name']: r for r in json.load(f)}
  teacher, student = rows['teacher'], rows[STUDENT]
  return {'seed': seed, 'teacher': teacher['top1'], 'student': student['top1'],
          'gap': teacher['top1'] - student['top1'],
          'faster': student['img_per_s'] / teacher['img_per_s'],
          'smaller': teacher['bytes'] / student['bytes'],
          'student_kib': student['bytes'] / 1024}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  results = [run_seed(int(s)) for s in FLAGS.seeds]
  print(f'Quickstart ({FLAGS.variant or "teacher-initialised student"}) over seeds '
        f'{FLAGS.seeds}; {machine.describe()}; {machine.load()}')
  print(f'{"seed":>4}  {"teacher %":>9}  {"int8 student %":>14}  {"gap (pts)":>9}  '
        f'{"faster (x)":>10}  {"smaller (x)":>11}  {"student KiB":>11}')
  for r in results:
    print(f'{r["seed"]:>4}  {r["teacher"]:>9.2f}  {r["student"]:>14.2f}  '
          f'{r["gap"]:>9.2f}  {r["faster"]:>10.2f}  {r["smaller"]:>11.2f}  '
          f'{r["student_kib"]:>11.1f}')
  for key in ('teacher', 'student', 'gap', 'faster', 'smaller'):
    values = [r[key] for r in results]
    print(f'{key}: {min(values):.2f} - {max(values):.2f}')


if __name__ == '__main__':
  cli.run_command(main)  # with the XLA CPU defaults the commands set
