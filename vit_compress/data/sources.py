"""Where examples come from: `config.dataset` names a source, by prefix.

  'digits'                the embedded dataset (prepares itself, offline);
  'cifar10', 'imagenet2012', 'oxford_iiit_pet:4.*.*', ...  any TFDS dataset
                          prepared under config.data_dir (tfds_source.py);
                          'tfds:NAME' says so explicitly;
  'folder:/path/to/root'  ROOT/<split>/<class>/*.{jpg,jpeg,png} (folder.py).

SOURCES maps each prefix to a factory `(rest of the name, data_dir) ->
Source` (source.py). A prefix ending in ':' takes whatever follows it; a bare
prefix ('digits') is a whole TFDS name, optionally with ':version' or
'/config'. A name with no registered prefix is a TFDS name; 'x:y' where y
is not a TFDS version ('1.0.0', '4.*.*') asks for prefix 'x:', and an
unknown one is an error listing the known prefixes.

Imports go one way: this registry -> the sources (folder, tfds_source) ->
source.py (the protocol, DatasetInfo) -> splits.py.
"""
import re
from typing import Callable, Optional, Tuple

from vit_compress import registry
from vit_compress.data import folder
from vit_compress.data import tfds_source
from vit_compress.data.source import DatasetInfo  # pylint: disable=unused-import
from vit_compress.data.source import Source
from vit_compress.data.splits import absolute_split  # pylint: disable=unused-import
from vit_compress.data.splits import split_size  # pylint: disable=unused-import
from vit_compress.data.tfds_source import COMMON  # pylint: disable=unused-import
from vit_compress.data.tfds_source import DatasetNotPreparedError  # pylint: disable=unused-import
from vit_compress.data.tfds_source import TfdsSource  # pylint: disable=unused-import

FOLDER_PREFIX = folder.PREFIX
TFDS_PREFIX = 'tfds:'
SELF_PREPARING = ('digits',)   # no download: built on first use

SourceFactory = Callable[[str, Optional[str]], Source]
SOURCES: registry.Registry[SourceFactory] = registry.Registry('dataset prefix')


def _folder(root: str, data_dir: Optional[str]) -> Source:
  del data_dir   # the root is the whole address
  return folder.FolderSource(root)


def _tfds(name: str, data_dir: Optional[str]) -> Source:
  base = name.split(':')[0].split('/')[0]
  return tfds_source.TfdsSource(name, data_dir, prepare=base in SELF_PREPARING)


SOURCES.register(FOLDER_PREFIX)(_folder)
SOURCES.register(TFDS_PREFIX)(_tfds)
for _name in SELF_PREPARING:
  SOURCES.register(_name)(_tfds)

# What may follow the ':' of a TFDS name: a version such as '1.0.0' or '4.*.*'.
_TFDS_VERSION = re.compile(r'[0-9*]+(\.[0-9*]+)*')


def resolve(name: str) -> Tuple[str, str]:
  """(prefix in SOURCES, what its factory gets) for a config.dataset string."""
  if not isinstance(name, str) or not name:
    raise ValueError(f'config.dataset must be a dataset name, got {name!r}.')
  head, colon, tail = name.partition(':')
  if colon and not _TFDS_VERSION.fullmatch(tail):
    prefix = head + colon
    if prefix not in SOURCES:
      raise registry.UnknownNameError(
          registry.unknown_name_message('dataset prefix', prefix, SOURCES.names())
          + f' (config.dataset={name!r}; a name without a prefix is a TFDS '
          'dataset.)')
    return prefix, tail
  base = head.split('/')[0]
  return (base if base in SOURCES else TFDS_PREFIX), name


def get_source(name: str, data_dir: Optional[str] = None) -> Source:
  """The source for config.dataset (see module docstring)."""
  prefix, rest = resolve(name)
  return SOURCES.get(prefix)(rest, data_dir)


def get_dataset_info(config_or_name, data_dir: Optional[str] = None
                     ) -> DatasetInfo:
  """DatasetInfo for a dataset name or a completed config (.dataset, .data_dir)."""
  if isinstance(config_or_name, str):
    return get_source(config_or_name, data_dir).info
  config = config_or_name
  return get_source(config.dataset, data_dir or config.data_dir).info
