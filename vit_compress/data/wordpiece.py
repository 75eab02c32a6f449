"""BERT's uncased WordPiece tokenisation, in pure Python (no tensorflow-text).

What vit_jax's LiT BERT towers were trained with, `tensorflow_text.BertTokenizer(
vocab, lower_case=True)`, step by step as its public source defines it:

  basic: case folding with NFKC, NFD, combining marks (accents) dropped;
    control and format characters (Unicode Cc, Cf) become spaces; split on
    whitespace, and every punctuation character (Unicode P, and all ASCII
    symbols, as in BERT) and CJK ideograph becomes a token of its own;
  wordpiece: each word greedily, longest vocabulary match first, pieces after
    the first prefixed '##'; a word with no full cover, or longer than 100
    UTF-8 bytes, is one '[UNK]'.

The vocabulary file has one token per line; a token's id is its line number.
"""
import unicodedata
from typing import Dict, List

import tensorflow as tf

UNK = '[UNK]'
MAX_WORD_BYTES = 100


def read_vocab(path: str) -> Dict[str, int]:
  """{token: id} from a vocabulary file (any path tf.io.gfile reads)."""
  with tf.io.gfile.GFile(path, 'r') as f:
    lines = f.read().split('\n')
  if lines and lines[-1] == '':
    lines.pop()   # the file's final newline
  return {token.rstrip('\r'): i for i, token in enumerate(lines)}


def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True   # '$', '+', '^', '`' ... are symbols to Unicode, punctuation to BERT
  return unicodedata.category(ch).startswith('P')


def _is_cjk(cp: int) -> bool:
  return any(lo <= cp <= hi for lo, hi in (
      (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
      (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_tokens(text: str) -> List[str]:
  """BERT's basic tokenizer (lower_case=True): words and punctuation marks."""
  text = unicodedata.normalize('NFD', unicodedata.normalize('NFKC', text).casefold())
  chars = []
  for ch in text:
    category = unicodedata.category(ch)
    if category == 'Mn':
      continue
    if category in ('Cc', 'Cf'):
      chars.append(' ')
    elif _is_punctuation(ch) or _is_cjk(ord(ch)):
      chars.append(f' {ch} ')
    else:
      chars.append(ch)
  return ''.join(chars).split()


def wordpieces(word: str, vocab: Dict[str, int]) -> List[str]:
  """Greedy longest-match-first pieces of one word ([UNK] if none covers it)."""
  if len(word.encode('utf-8')) > MAX_WORD_BYTES:
    return [UNK]
  pieces, start = [], 0
  while start < len(word):
    for end in range(len(word), start, -1):
      piece = word[start:end] if start == 0 else '##' + word[start:end]
      if piece in vocab:
        pieces.append(piece)
        start = end
        break
    else:
      return [UNK]
  return pieces


def tokenize(text: str, vocab: Dict[str, int]) -> List[str]:
  return [p for word in basic_tokens(text) for p in wordpieces(word, vocab)]
