"""What every dataset source offers the pipeline: the `Source` protocol.

A source reads a split (or one shard of it) as a deterministic tf.data
stream of *raw* examples (images still encoded, or file names), so that
shuffling, skipping, caching and picking a process's rows (pipeline.py)
happen before any decoding; `load` then finishes one example (reads a file)
just before preprocessing. The pipeline asks a source, never tests its class:
whatever differs between sources is an attribute or a method here.
"""
import dataclasses
from typing import Dict, List, Optional, Protocol, Tuple, runtime_checkable

import tensorflow as tf

from vit_compress.data import splits as splits_lib


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a trainer needs to know about a dataset before reading it."""
  name: str
  num_classes: Optional[int]
  class_names: Tuple[str, ...]
  splits: Dict[str, int]          # split name -> number of examples
  default_eval_split: str
  image_shape: Optional[Tuple[Optional[int], ...]] = None  # stored 'image'

  def num_examples(self, split: str) -> int:
    """Size of a split string such as 'train', 'train[:98%]', 'a+b'."""
    return splits_lib.split_size(split, self.splits)


@runtime_checkable
class Source(Protocol):
  """A dataset the pipeline reads (registered by prefix in sources.py)."""

  info: DatasetInfo
  # True when raw elements are small (file names), so shuffling the whole
  # split costs little and the pipeline ignores config.shuffle_buffer.
  full_shuffle: bool

  def read(self, split: str, shard_index: int = 0,
           num_shards: int = 1) -> Tuple[tf.data.Dataset, int]:
    """Shard `shard_index` of `num_shards` of `split` (raw), and its size."""

  def load(self, example) -> Dict[str, tf.Tensor]:
    """A raw example made ready for the pp ops (e.g. its file read)."""

  def undecodable(self, split: str, limit_seconds: float = 60.0) -> List[str]:
    """After a read error mid-run: the files of `split` that fail to decode
    ([] where the source cannot tell)."""
