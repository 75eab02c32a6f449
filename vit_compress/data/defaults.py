"""The data keys of an experiment config and their defaults: one table.

They sit at the top level of the config (`config.dataset`, `config.cache`,
...), not in a section. `config_schema.defaults()` puts every one of them in an
experiment config, and the pipeline reads the completed config's fields with
no default of its own: this table is the only one.
"""
from typing import Any, Dict

from ml_collections import config_dict


def defaults() -> Dict[str, Any]:
  """Every data key with its default, in the order experiment configs list them."""
  return {
      'dataset': 'digits',
      'data_dir': config_dict.placeholder(str),
      'train_split': 'train',
      'eval_split': config_dict.placeholder(str),  # default: the dataset's test split
      'pp_train': 'decode|resize(8)|to_rgb|value_range(-1, 1)|onehot',
      'pp_eval': 'decode|resize(8)|to_rgb|value_range(-1, 1)|onehot',
      'batch_size': 64,
      'eval_batch_size': config_dict.placeholder(int),
      'shuffle_buffer': 10_000,
      'prefetch': 2,
      'cache': True,
      'seed': 0,
  }

