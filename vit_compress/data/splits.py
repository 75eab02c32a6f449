"""Split strings: TFDS slice syntax over a dataset's split sizes.

Every source speaks the same split language ('train', 'train[:98%]',
'train[10%:]+test', 'test[:100]'), resolved here against plain
{split name: number of examples} dicts, so a folder of images and a TFDS
dataset select the same rows for the same string. This module knows no
source: sources import it, never the other way.
"""
import types
from typing import Dict, Iterable, List

import tensorflow_datasets as tfds

# The split evaluated when config.eval_split is unset, in this order of
# preference; a dataset with none of them evaluates on its first non-train split.
EVAL_SPLITS = ('test', 'validation', 'val')


def absolute_split(split: str, sizes: Dict[str, int]) -> List[types.SimpleNamespace]:
  """TFDS split syntax ('train[10%:]+test') -> [(splitname, from_, to)]."""
  infos = {k: types.SimpleNamespace(num_examples=n) for k, n in sizes.items()}
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  except (ValueError, AssertionError) as e:
    raise ValueError(f'Bad split {split!r}: {e} Known splits: '
                     f'{", ".join(sorted(sizes))}; slices look like '
                     "'train[:98%]', 'train[98%:]', 'test[:100]'.") from None
  return [types.SimpleNamespace(
      splitname=i.splitname, from_=i.from_ or 0,
      to=sizes[i.splitname] if i.to is None else i.to) for i in instructions]


def split_size(split: str, sizes: Dict[str, int]) -> int:
  """Examples selected by a TFDS split string, given the split sizes."""
  return sum(i.to - i.from_ for i in absolute_split(split, sizes))


def default_eval_split(splits: Iterable[str]) -> str:
  """The split to evaluate on when the config names none (see EVAL_SPLITS)."""
  splits = list(splits)
  for name in EVAL_SPLITS:
    if name in splits:
      return name
  others = [s for s in splits if s != 'train']
  return (others or splits)[0]
