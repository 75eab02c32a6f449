"""Tokenizers (bytes, SentencePiece) and captions for LiT."""
import numpy as np
import pytest
import tensorflow as tf

from vit_compress import data
from vit_compress import registry
from vit_compress import zoo
from vit_compress.data import captions
from vit_compress.data import preprocess
from vit_compress.data import tokenizers

TEXTS = ['ab', '', 'héllo', 'a photo of the digit seven.', 'x' * 40]


def test_bytes_ids_are_utf8_bytes_plus_two_then_eos_then_padding():
  tok = data.get_tokenizer('bytes', max_len=6)
  np.testing.assert_array_equal(tok('ab'), [[ord('a') + 2, ord('b') + 2, 1,
                                             0, 0, 0]])
  # 'é' is two UTF-8 bytes, 0xC3 0xA9.
  np.testing.assert_array_equal(tok(['é']), [[0xC3 + 2, 0xA9 + 2, 1, 0, 0, 0]])
  # Too long: cut, with end-of-text kept last.
  np.testing.assert_array_equal(tok('abcdefgh'),
                                [[99, 100, 101, 102, 103, 1]])
  assert tok(TEXTS).shape == (5, 6) and tok(TEXTS).dtype == np.int32


def test_bytes_vocabulary_fits_the_zoo_text_tower():
  assert tokenizers.BYTES_VOCAB_SIZE == 258
  assert tokenizers.BYTES_VOCAB_SIZE <= zoo.get('LiT_Nano').text.vocab_size
  ids = data.get_tokenizer('bytes', 64)(bytes(range(1, 128)).decode() + 'ÿ')
  assert ids.max() < tokenizers.BYTES_VOCAB_SIZE


def _tf_rows(tok, texts):
  return np.stack([tok.tf_tokenize(tf.constant(t)).numpy() for t in texts])


def test_bytes_python_and_tf_agree():
  tok = data.get_tokenizer('bytes', max_len=16)
  np.testing.assert_array_equal(_tf_rows(tok, TEXTS), tok(TEXTS))


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  d = tmp_path_factory.mktemp('sp')
  corpus = d / 'corpus.txt'
  corpus.write_text('\n'.join(t for row in captions.caption_texts(
      data.digits.CLASS_NAMES, 'digits') for t in row))
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(d / 'm'), vocab_size=30,
      pad_id=0, unk_id=1, bos_id=-1, eos_id=2, minloglevel=2)
  return str(d / 'm.model')


def test_sentencepiece_python_and_tf_agree(sp_model):
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  tok = data.get_tokenizer('sentencepiece', max_len=20, model=sp_model)
  assert tok.vocab_size == 30 and tok.eos_id == 2 and tok.pad_id == 0
  ids = spm.SentencePieceProcessor(model_file=sp_model).encode('the number one.')
  row = tok('the number one.')[0]
  np.testing.assert_array_equal(row[:len(ids) + 1], ids + [2])
  assert (row[len(ids) + 1:] == 0).all()
  np.testing.assert_array_equal(_tf_rows(tok, TEXTS), tok(TEXTS))


def test_tokenizer_errors():
  with pytest.raises(ValueError, match='needs a model file'):
    data.get_tokenizer('sentencepiece', 16)
  with pytest.raises(registry.UnknownNameError, match="'sentencepiece'"):
    data.get_tokenizer('sentencepeice', 16)
  with pytest.raises(ValueError, match='positive integer'):
    data.get_tokenizer('bytes', 0)


# ----------------------------------------------------------------- captions
def test_caption_texts_and_template_sets():
  texts = data.caption_texts(['zero', 'golden_retriever'], 'digits')
  assert texts[0][0] == 'a photo of the digit zero.'
  assert texts[1][1] == 'a handwritten golden retriever.'
  assert len(texts[0]) == len(data.TEMPLATES['digits'])
  assert data.caption_texts(['cat'], ('{}!', 'my {}'))[0] == ['cat!', 'my cat']
  with pytest.raises(registry.UnknownNameError, match="'digits'"):
    data.caption_texts(['cat'], 'digts')
  with pytest.raises(ValueError, match='one {}'):
    data.caption_texts(['cat'], ('no slot',))


def test_captions_op_draws_templates_per_example_then_tokenizes():
  names = data.digits.CLASS_NAMES
  table = data.caption_texts(names, 'digits')
  pp = preprocess.build('captions("digits")|tokenize(32)', class_names=names)
  tok = data.get_tokenizer('bytes', 32)
  drawn = set()
  for seed in range(12):
    ex = pp({'label': tf.constant(7, tf.int64),
             '_rng': tf.constant([seed, 0], tf.int64)})
    text = ex['texts'].numpy().decode()
    assert text in table[7]
    np.testing.assert_array_equal(ex['tokens'].numpy(), tok(text)[0])
    drawn.add(text)
  assert len(drawn) > 1
  fixed = preprocess.build('captions("digits", sample=False)',
                           class_names=names)({'label': tf.constant(3)})
  assert fixed['texts'].numpy().decode() == 'a photo of the digit three.'
  # max_len comes from the LiT model config when not written in the op.
  out = preprocess.build('tokenize', max_len=16)({'texts': tf.constant('hi')})
  assert out['tokens'].shape == (16,)
