"""What `config.mode` may name: one registry, read by main.py and experiment.py.

Each mode is `run(config, workdir)`. The registry sits low (it imports only
the registry) so that `experiment.validate` checks a mode without importing
main; a mode's body imports the high-level module it runs (train, recipe)
when it runs, never at import.
"""
from absl import logging

from vit_compress.registry import Registry

MODES = Registry('mode')


@MODES.register('train')
def _train(config, workdir):
  from vit_compress import train  # pylint: disable=g-import-not-at-top
  metrics = train.train_and_evaluate(config, workdir)
  logging.info('Finished: %s', metrics)
  print(f'Finished at step {metrics["step"]}: ' + ', '.join(
      f'{k} {v:.4f}' for k, v in metrics.items() if k != 'step'))


@MODES.register('recipe')
def _recipe(config, workdir):
  from vit_compress import recipe  # pylint: disable=g-import-not-at-top
  recipe.run(config, workdir)
