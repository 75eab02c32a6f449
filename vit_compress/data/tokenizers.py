"""Text tokenizers for LiT: byte-level (no files), SentencePiece (a model file),
and BERT's WordPiece (a vocabulary file).

Each gives int32 ids of a fixed length `max_len`. 'bytes' and 'sentencepiece':
the text's ids, then the end-of-text id, then padding; a text that does not
fit is cut so that the end-of-text id is always the last non-padding token.
The public vit_jax LiT files were trained with vit_jax's own two:
'sentencepiece_eos' (LiT-L16S, LiT-L16Ti) pads with the end-of-text id too,
so the last position, which their text tower pools, always holds it;
'bert_wordpiece' (LiT-B16B_2, LiT-L16L) is '[CLS]', then the WordPiece ids
cut to max_len - 1 (no '[SEP]'), then 0-padding, which BERT masks out.
Each tokenizer works from Python (`tok(['a photo of ...'])` -> np.ndarray
(N, max_len), e.g. for zero-shot prompts) and inside tf.data (`tok.tf_tokenize(scalar string)` ->
tf.Tensor (max_len,)), so training and zero-shot see identical ids.

Byte ids: 0 = padding, 1 = end of text, byte b -> b + 2; vocabulary 258, which
fits the zoo's byte-level text towers (LiT_Nano has 260 embeddings).
"""
import os
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from vit_compress import registry
from vit_compress.data import wordpiece

PAD_ID = 0
BYTES_EOS_ID = 1
BYTES_OFFSET = 2
BYTES_VOCAB_SIZE = 256 + BYTES_OFFSET

TOKENIZERS = registry.Registry('tokenizer')
Texts = Union[str, Sequence[str]]


def _finish(ids: Sequence[int], eos_id: Optional[int], max_len: int,
            pad_id: int = PAD_ID):
  """ids + [eos], cut to max_len (eos kept last), padded with pad_id."""
  tail = [] if eos_id is None else [eos_id]
  ids = list(ids)[:max_len - len(tail)] + tail
  return ids + [pad_id] * (max_len - len(ids))


def _tf_finish(ids: tf.Tensor, eos_id: Optional[int], max_len: int):
  tail = 0 if eos_id is None else 1
  ids = ids[:max_len - tail]
  if eos_id is not None:
    ids = tf.concat([ids, tf.constant([eos_id], tf.int32)], axis=0)
  ids = tf.pad(ids, [[0, max_len - tf.shape(ids)[0]]], constant_values=PAD_ID)
  return tf.ensure_shape(ids, [max_len])


def _as_list(texts: Texts):
  return [texts] if isinstance(texts, (str, bytes)) else list(texts)


def _as_str(text) -> str:
  if isinstance(text, np.ndarray):   # a 0-d array from tf.numpy_function
    text = text.item()
  return text.decode('utf-8') if isinstance(text, bytes) else str(text)


@TOKENIZERS.register('bytes')
class BytesTokenizer:
  """UTF-8 bytes shifted by 2; needs no vocabulary file."""

  vocab_size = BYTES_VOCAB_SIZE
  eos_id = BYTES_EOS_ID
  pad_id = PAD_ID

  def __init__(self, max_len: int, model: Optional[str] = None):
    if model:
      raise ValueError("The 'bytes' tokenizer takes no model file "
                       f'(got {model!r}); did you mean tokenizer='
                       "'sentencepiece'?")
    self.max_len = _check_max_len(max_len)

  def __call__(self, texts: Texts) -> np.ndarray:
    rows = [_finish([b + BYTES_OFFSET for b in _as_str(t).encode('utf-8')],
                    self.eos_id, self.max_len) for t in _as_list(texts)]
    return np.asarray(rows, np.int32).reshape(-1, self.max_len)

  def tf_tokenize(self, text: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32) + BYTES_OFFSET
    return _tf_finish(ids, self.eos_id, self.max_len)


class _PythonTokenizer:
  """A tokenizer whose `_row(text)` (one padded id row) runs in Python."""

  def __call__(self, texts: Texts) -> np.ndarray:
    rows = [self._row(t) for t in _as_list(texts)]
    return np.asarray(rows, np.int32).reshape(-1, self.max_len)

  def tf_tokenize(self, text: tf.Tensor) -> tf.Tensor:
    # tf.numpy_function calls the Python tokenizer from tf.data.
    ids = tf.numpy_function(self._row, [text], tf.int32, stateful=False)
    return tf.ensure_shape(ids, [self.max_len])


@TOKENIZERS.register('sentencepiece')
class SentencepieceTokenizer(_PythonTokenizer):
  """A SentencePiece model file (`model`, any path tf.io.gfile reads).

  Pads with the model's pad id if it defines one, else 0; appends its
  end-of-sentence id if it defines one.
  """

  def __init__(self, max_len: int, model: Optional[str] = None):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    if not model:
      raise ValueError("tokenizer='sentencepiece' needs a model file: set "
                       'tokenizer_model (config.model.tokenizer_model or the '
                       "tokenize op's tokenizer_model=...).")
    if not tf.io.gfile.exists(model):
      raise FileNotFoundError(f'SentencePiece model file {model!r} not found.')
    self.max_len = _check_max_len(max_len)
    self._sp = sentencepiece.SentencePieceProcessor()
    with tf.io.gfile.GFile(model, 'rb') as f:
      self._sp.LoadFromSerializedProto(f.read())
    self.vocab_size = self._sp.GetPieceSize()
    self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else PAD_ID

  def _row(self, text) -> np.ndarray:
    ids = self._sp.EncodeAsIds(_as_str(text))
    return np.asarray(_finish(ids, self.eos_id, self.max_len, self.pad_id),
                      np.int32)


@TOKENIZERS.register('sentencepiece_eos')
class SentencepieceEosTokenizer(SentencepieceTokenizer):
  """vit_jax's LiT SentencePiece ("sticky eos"): padded with the end-of-text
  id, which is therefore always the last token (the one the tower pools)."""

  def __init__(self, max_len: int, model: Optional[str] = None):
    super().__init__(max_len, model)
    if self.eos_id is None:
      raise ValueError(f"tokenizer='sentencepiece_eos': {model} defines no "
                       "end-of-sentence id; use tokenizer='sentencepiece'.")
    self.pad_id = self.eos_id


@TOKENIZERS.register('bert_wordpiece')
class BertWordpieceTokenizer(_PythonTokenizer):
  """BERT's uncased WordPiece (`data.wordpiece`) from a vocabulary file
  (`model`: one token per line, e.g. vit_jax's gs://vit_models/lit/LiT-B16B_2.txt):
  '[CLS]' then the text's ids, cut to max_len, padded with 0."""

  eos_id = None
  pad_id = PAD_ID

  def __init__(self, max_len: int, model: Optional[str] = None):
    if not model:
      raise ValueError("tokenizer='bert_wordpiece' needs its vocabulary file: "
                       'set tokenizer_model, or put the .txt vit_jax publishes '
                       'with a LiT file beside the .npz (gs://vit_models/lit/'
                       'LiT-B16B_2.txt beside LiT-B16B_2.npz).')
    if not tf.io.gfile.exists(model):
      raise FileNotFoundError(f'WordPiece vocabulary file {model!r} not found.')
    self.max_len = _check_max_len(max_len)
    self._vocab = wordpiece.read_vocab(model)
    for token in ('[CLS]', wordpiece.UNK):
      if token not in self._vocab:
        raise ValueError(f'{model} is not a BERT vocabulary: it has no {token}.')
    self.cls_id = self._vocab['[CLS]']
    self.vocab_size = len(self._vocab)

  def _row(self, text) -> np.ndarray:
    ids = [self._vocab[p] for p in wordpiece.tokenize(_as_str(text), self._vocab)]
    return np.asarray(_finish([self.cls_id] + ids, None, self.max_len), np.int32)


def _check_max_len(max_len) -> int:
  if not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f'max_len must be a positive integer, got {max_len!r}.')
  return int(max_len)


# The file each tokenizer reads, as vit_jax publishes it beside a LiT .npz
# (gs://vit_models/lit/LiT-B16B_2.txt, LiT-L16S.model).
VOCAB_SUFFIX = {'bert_wordpiece': '.txt', 'sentencepiece': '.model',
                'sentencepiece_eos': '.model'}


def vocab_beside(npz_path: str, name: str) -> Optional[str]:
  """The vocabulary file tokenizer `name` reads, found beside `npz_path`."""
  suffix = VOCAB_SUFFIX.get(name)
  path = os.path.splitext(os.fspath(npz_path))[0] + suffix if suffix else None
  return path if path and tf.io.gfile.exists(path) else None


def get_tokenizer(name: str = 'bytes', max_len: int = 16,
                  model: Optional[str] = None):
  """The tokenizer `name` (a TOKENIZERS name) for `max_len` ids; `model` is
  its SentencePiece model or WordPiece vocabulary file."""
  return TOKENIZERS.get(name)(max_len, model)
