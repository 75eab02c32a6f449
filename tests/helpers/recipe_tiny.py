"""configs/quickstart.py with a few training steps: the recipe tests' config.

A config file, so that a test runs it in-process and through
`python -m vit_compress.main --config=tests/helpers/recipe_tiny.py` alike.
"""
from configs import quickstart

STEPS = 40
CHECKPOINT_EVERY = 10


def get_config(arg: str = ''):
  del arg
  config = quickstart.get_config()
  config.eval_every = 1000   # only at the end
  config.log_every = 10
  stages = config.recipe.stages
  for name in ('teacher', 'student'):
    stages[name].config.total_steps = STEPS
    stages[name].config.schedule.warmup_steps = 5
    stages[name].config.checkpoint_every = CHECKPOINT_EVERY
  stages.student.config.prune.end_step = STEPS // 2
  stages.student.config.prune.frequency = 2
  stages.report.batch_sizes = (32,)
  stages.report.repeats = 1
  stages.report.min_run_s = 0.0
  stages.report.rounds = 2
  stages.export.num_calibration = 32
  return config
