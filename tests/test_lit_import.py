"""vit_jax's public LiT files (gs://vit_models/lit, as lit.ipynb loads them).

Each file is written here in its public layout: random values under the real
key names (vit_jax's `LitModel` params: `img/` a Linen ViT, `txt/` the text
tower, `t`), at tiny shapes. The BERT towers (LiT-B16B_2, LiT-L16L) hold
flaxformer's `BertEncoder` (`txt/BertEncoder_0/...`, attention kernels stored
flattened to 2-D); the small text towers (LiT-L16S, LiT-L16Ti) vit_jax's
`TextTransformer`. The text embeddings and zero-shot logits of the imported
model are checked against a NumPy forward pass written from the file's own
arrays, and the tokenizers against their published behaviour.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vit_compress import checkpoint
from vit_compress import data
from vit_compress import models
from vit_compress import param_paths
from vit_compress import predict
from vit_compress import zoo
from vit_compress.data import wordpiece
from vit_compress.evaluation import zero_shot

# A BERT vocabulary in the file format vit_jax publishes beside its BERT LiT
# files (one token per line, id = line number).
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a', 'photo', 'of', 'the', 'un',
         '##aff', '##able', 'hello', 'world', ',', '!', '.', "'", 's', 'john',
         'johan', '##son', 'house', 'cafe', 'cat', 'dog', '##s', 'thing', '$']
WIDTH, HEADS, MLP, LAYERS, OUT = 16, 2, 24, 2, 32   # OUT: LiT_Nano's image width
TEMPLATES = ('a photo of a {}.', 'a {}!')
CLASSES = ['cat', 'dog', 'unaffable thing']
SP_VOCAB = 20   # the tiny SentencePiece model's vocabulary


@pytest.fixture(scope='module')
def vocab_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  path.write_text('\n'.join(VOCAB) + '\n')
  return str(path)


# ------------------------------------------------------------ tokenizers
def test_wordpiece_basic_and_greedy_longest_match():
  vocab = {t: i for i, t in enumerate(VOCAB)}
  # The BERT reference tokenizer's documented examples.
  assert wordpiece.tokenize('unaffable', vocab) == ['un', '##aff', '##able']
  assert wordpiece.tokenize("John Johanson's house", vocab) == [
      'john', 'johan', '##son', "'", 's', 'house']
  # Lowercased, accents stripped, punctuation split off, whitespace normalised.
  assert wordpiece.tokenize('Hello,\tWORLD!', vocab) == ['hello', ',', 'world', '!']
  assert wordpiece.tokenize('Café.', vocab) == ['cafe', '.']
  assert wordpiece.tokenize('cats', vocab) == ['cat', '##s']
  # No full cover -> one [UNK] for the whole word; ASCII symbols are punctuation.
  assert wordpiece.tokenize('dogz a$b', vocab) == ['[UNK]', 'a', '$', '[UNK]']
  # CJK ideographs are words of their own; control characters split words
  # (tensorflow-text's rule); case folding is full ('ß' -> 'ss').
  assert wordpiece.basic_tokens('a\x07b猫c STRAẞE') == ['a', 'b', '猫', 'c', 'strasse']
  assert wordpiece.tokenize('x' * 101, {'x': 0, '##x': 1}) == ['[UNK]']


def test_bert_wordpiece_tokenizer_ids(vocab_file):
  tok = data.get_tokenizer('bert_wordpiece', 8, vocab_file)
  ids = {t: i for i, t in enumerate(VOCAB)}
  # [CLS] first, no [SEP], 0-padded (vit_jax's LiT BertTokenizer).
  np.testing.assert_array_equal(tok('Hello, World!'), [[
      ids['[CLS]'], ids['hello'], ids[','], ids['world'], ids['!'], 0, 0, 0]])
  long = tok('a photo of the unaffable cat house .')[0]
  np.testing.assert_array_equal(long, [ids[t] for t in (
      '[CLS]', 'a', 'photo', 'of', 'the', 'un', '##aff', '##able')])
  texts = ['Hello, World!', '', 'cats and dogs', "john's cafe"]
  rows = np.stack([tok.tf_tokenize(tf.constant(t)).numpy() for t in texts])
  np.testing.assert_array_equal(rows, tok(texts))
  assert tok.vocab_size == len(VOCAB)
  with pytest.raises(ValueError, match='needs its vocabulary file'):
    data.get_tokenizer('bert_wordpiece', 8)


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  d = tmp_path_factory.mktemp('sp')
  corpus = d / 'corpus.txt'
  corpus.write_text('\n'.join(t.format(c) for t in TEMPLATES for c in CLASSES * 3))
  # As LiT's SentencePiece models: '</s>' is the end-of-sentence id, no pad.
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(d / 'm'), vocab_size=SP_VOCAB, unk_id=0,
      bos_id=-1, eos_id=1, pad_id=-1, minloglevel=2)
  return str(d / 'm.model')


def test_sentencepiece_eos_is_sticky(sp_model):
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sp = spm.SentencePieceProcessor(model_file=sp_model)
  eos = sp.piece_to_id('</s>')
  tok = data.get_tokenizer('sentencepiece_eos', 12, sp_model)
  short = sp.encode('a cat')
  # ids, then '</s>' up to max_len: the last token is always '</s>'.
  np.testing.assert_array_equal(tok('a cat')[0], short + [eos] * (12 - len(short)))
  text = 'a photo of a unaffable thing. a photo of a dog.'
  long = sp.encode(text)
  assert len(long) > 11
  np.testing.assert_array_equal(tok(text)[0], long[:11] + [eos])
  rows = np.stack([tok.tf_tokenize(tf.constant(t)).numpy() for t in ['a cat', text]])
  np.testing.assert_array_equal(rows, tok(['a cat', text]))


# ------------------------------------------------------------ the files
def _random(rng, *shape):
  return rng.normal(0, 0.3, shape).astype(np.float32)


def _image_tower(config, rng):
  """`img/`: vit_jax's Linen ViT without a head (its names are ours)."""
  shapes = models.param_shapes(config)['img']
  return {f'img/{k}': _random(rng, *s.shape) for k, s in param_paths.flatten_with_paths(shapes)}


def _dense(rng, name, kernel, bias):
  return {f'{name}/kernel': _random(rng, *kernel), f'{name}/bias': _random(rng, *bias)}


def _norm(rng, name):
  return {f'{name}/scale': 1 + _random(rng, WIDTH), f'{name}/bias': _random(rng, WIDTH)}


def _bert_tower(rng, vocab_size):
  """`txt/`: flaxformer BertEncoder under vit_jax's BertModel, then its head."""
  p = 'txt/BertEncoder_0/'
  a = {p + f'embedder/embedders_{n}/embedding': _random(rng, rows, WIDTH)
       for n, rows in (('token_ids', vocab_size), ('position_ids', 16),
                       ('segment_ids', 2))}
  a.update(_norm(rng, p + 'layer_norm'))
  for i in range(LAYERS):
    layer = p + f'encoder_block/layer_sequence/layers_{i}/'
    for n in ('query', 'key', 'value'):   # flattened (D, H*d), as flaxformer stores them
      a.update(_dense(rng, layer + f'attention_block/attention_layer/{n}',
                      (WIDTH, WIDTH), (WIDTH,)))
    a.update(_dense(rng, layer + 'attention_block/dense_layer', (WIDTH, WIDTH), (WIDTH,)))
    a.update(_dense(rng, layer + 'mlp_block/mlp/dense_layer', (WIDTH, MLP), (MLP,)))
    a.update(_dense(rng, layer + 'mlp_block/dense_layer', (MLP, WIDTH), (WIDTH,)))
    for block in ('attention_block', 'mlp_block'):
      a.update(_norm(rng, layer + f'{block}/layer_norm'))
  return {**a, **_dense(rng, 'txt/head', (WIDTH, OUT), (OUT,))}


def _text_transformer_tower(rng, vocab_size, length):
  """`txt/`: vit_jax's TextTransformer (Embed_0, pos_embedding, Encoder_0, head)."""
  a = {'txt/Embed_0/embedding': _random(rng, vocab_size, WIDTH),
       'txt/pos_embedding': _random(rng, 1, length, WIDTH)}
  d = WIDTH // HEADS
  for i in range(LAYERS):
    block = f'txt/Encoder_0/encoderblock_{i}/'
    attn = block + 'MultiHeadDotProductAttention_0/'
    for n in ('query', 'key', 'value'):
      a.update(_dense(rng, attn + n, (WIDTH, HEADS, d), (HEADS, d)))
    a.update(_dense(rng, attn + 'out', (HEADS, d, WIDTH), (WIDTH,)))
    a.update(_dense(rng, block + 'MlpBlock_0/Dense_0', (WIDTH, MLP), (MLP,)))
    a.update(_dense(rng, block + 'MlpBlock_0/Dense_1', (MLP, WIDTH), (WIDTH,)))
    for n in ('LayerNorm_0', 'LayerNorm_1'):
      a.update(_norm(rng, block + n))
  a.update(_norm(rng, 'txt/Encoder_0/encoder_norm'))
  return {**a, **_dense(rng, 'txt/head', (WIDTH, OUT), (OUT,))}


# ------------------------------------------------- NumPy reference forwards
def _ln(x, scale, bias, eps):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def _gelu(x):   # tanh approximation: flax's nn.gelu, which both towers use
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _attention(x, q, k, v, mask=None):
  """q, k, v: (B, L, H, d) projections of x; mask: (B, L) keys to attend to."""
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask[:, None, None, :], logits, -1e30)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', w, v)


def _bert_reference(a, tokens):
  p = 'txt/BertEncoder_0/'
  batch, length = tokens.shape
  x = (a[p + 'embedder/embedders_token_ids/embedding'][tokens]
       + a[p + 'embedder/embedders_position_ids/embedding'][np.arange(length)]
       + a[p + 'embedder/embedders_segment_ids/embedding'][0])
  x = _ln(x, a[p + 'layer_norm/scale'], a[p + 'layer_norm/bias'], 1e-12)
  split = lambda y: y.reshape(batch, length, HEADS, WIDTH // HEADS)
  for i in range(LAYERS):
    g = lambda name: a[p + f'encoder_block/layer_sequence/layers_{i}/' + name]
    qkv = [split(x @ g(f'attention_block/attention_layer/{n}/kernel')
                 + g(f'attention_block/attention_layer/{n}/bias'))
           for n in ('query', 'key', 'value')]
    y = _attention(x, *qkv, mask=tokens > 0).reshape(batch, length, WIDTH)
    y = y @ g('attention_block/dense_layer/kernel') + g('attention_block/dense_layer/bias')
    x = _ln(x + y, g('attention_block/layer_norm/scale'),
            g('attention_block/layer_norm/bias'), 1e-12)
    y = _gelu(x @ g('mlp_block/mlp/dense_layer/kernel') + g('mlp_block/mlp/dense_layer/bias'))
    y = y @ g('mlp_block/dense_layer/kernel') + g('mlp_block/dense_layer/bias')
    x = _ln(x + y, g('mlp_block/layer_norm/scale'), g('mlp_block/layer_norm/bias'), 1e-12)
  return x[:, 0] @ a['txt/head/kernel'] + a['txt/head/bias']   # [CLS]


def _text_transformer_reference(a, tokens):
  x = a['txt/Embed_0/embedding'][tokens] + a['txt/pos_embedding']
  for i in range(LAYERS):
    g = lambda name: a[f'txt/Encoder_0/encoderblock_{i}/' + name]
    y = _ln(x, g('LayerNorm_0/scale'), g('LayerNorm_0/bias'), 1e-6)
    attn = 'MultiHeadDotProductAttention_0/'
    qkv = [np.einsum('bld,dhk->blhk', y, g(attn + f'{n}/kernel')) + g(attn + f'{n}/bias')
           for n in ('query', 'key', 'value')]
    y = np.einsum('blhk,hkd->bld', _attention(y, *qkv), g(attn + 'out/kernel'))
    x = x + y + g(attn + 'out/bias')
    y = _ln(x, g('LayerNorm_1/scale'), g('LayerNorm_1/bias'), 1e-6)
    y = _gelu(y @ g('MlpBlock_0/Dense_0/kernel') + g('MlpBlock_0/Dense_0/bias'))
    x = x + y @ g('MlpBlock_0/Dense_1/kernel') + g('MlpBlock_0/Dense_1/bias')
  x = _ln(x, a['txt/Encoder_0/encoder_norm/scale'], a['txt/Encoder_0/encoder_norm/bias'], 1e-6)
  return x[:, -1] @ a['txt/head/kernel'] + a['txt/head/bias']   # the last token


def _normalize(z):
  return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _reference_classifier(text_fn, tok):
  texts = [t.format(c) for c in CLASSES for t in TEMPLATES]
  z = _normalize(text_fn(tok(texts))).reshape(len(CLASSES), len(TEMPLATES), -1)
  return _normalize(z.mean(1))


def _lit_config(text_model, text, tokenizer, tokenizer_model):
  config = zoo.get('LiT_Nano')
  config.text_model, config.text = text_model, text
  config.tokenizer, config.tokenizer_model = tokenizer, tokenizer_model
  return config


LAYOUTS = {
    # LiT-B16B_2 / LiT-L16L: zoo.get('LiT_B16B_2') at tiny widths.
    'bert': lambda vocab: _lit_config(
        'bert', {'width': WIDTH, 'num_layers': LAYERS, 'num_heads': HEADS,
                 'mlp_dim': MLP, 'vocab_size': len(VOCAB), 'max_position': 16,
                 'type_vocab_size': 2}, 'bert_wordpiece', vocab),
    # LiT-L16S / LiT-L16Ti: zoo.get('LiT_L16S') at tiny widths.
    'text_transformer': lambda sp: _lit_config(
        'text_transformer', {'width': WIDTH, 'num_layers': LAYERS, 'num_heads': HEADS,
                             'mlp_dim': MLP, 'vocab_size': SP_VOCAB},
        'sentencepiece_eos', sp),
}


@pytest.mark.slow
@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_public_lit_file_imports_and_zero_shots(layout, vocab_file, sp_model, tmp_path):
  vocab = vocab_file if layout == 'bert' else sp_model
  config = LAYOUTS[layout](vocab)
  assert config.tokenizer == (zoo.get('LiT_B16B_2') if layout == 'bert'
                              else zoo.get('LiT_L16S')).tokenizer
  rng = np.random.default_rng(0)
  arrays = _image_tower(config, rng)
  if layout == 'bert':
    arrays.update(_bert_tower(rng, len(VOCAB)))
    text_fn = lambda t: _bert_reference(arrays, t)
  else:
    arrays.update(_text_transformer_tower(rng, SP_VOCAB, config.max_len))
    text_fn = lambda t: _text_transformer_reference(arrays, t)
  arrays['t'] = np.asarray([2.3], np.float32)
  path = str(tmp_path / 'LiT-tiny.npz')
  np.savez(path, **arrays)   # how vit_jax stores params: '/'-joined paths

  params = checkpoint.load_npz(path, config)
  module = models.build(config)
  loaded = dict(param_paths.flatten_with_paths(params))
  for key, value in arrays.items():
    if key.startswith('img/') or key == 't':
      np.testing.assert_array_equal(loaded[key], value)
  tok = data.get_tokenizer(config.tokenizer, config.max_len, config.tokenizer_model)
  tokens = tok(['a photo of a cat.', 'Hello, unaffable World!', ''])
  ztxt = np.asarray(module.apply({'params': params}, tokens=tokens)['ztxt'])
  np.testing.assert_allclose(ztxt, _normalize(text_fn(tokens)), rtol=2e-5, atol=2e-6)

  classifier = np.asarray(zero_shot.zero_shot_classifier(
      module, params, CLASSES, TEMPLATES, tok))
  want = _reference_classifier(text_fn, tok)
  assert classifier.shape == (len(CLASSES), OUT)
  np.testing.assert_allclose(classifier, want, rtol=2e-5, atol=2e-6)
  images = rng.integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
  x = (images / 255 * 2 - 1).astype(np.float32)   # pp 'value_range(-1, 1)'
  zimg = np.asarray(module.apply({'params': params}, images=x)['zimg'])
  logits = zimg @ classifier.T
  assert logits.shape == (4, len(CLASSES))
  np.testing.assert_allclose(logits, zimg @ want.T, rtol=2e-5, atol=2e-6)

  # predict finds the vocabulary published beside the file (LiT-tiny.txt /
  # LiT-tiny.model, as gs://vit_models/lit has) when the config names none.
  beside = os.path.splitext(path)[0] + ('.txt' if layout == 'bert' else '.model')
  tf.io.gfile.copy(vocab, beside)
  config.tokenizer_model = None
  with open(os.path.splitext(path)[0] + '.model_config.json', 'w') as f:
    json.dump(checkpoint.config_to_json(config), f)
  p = predict.load(path, pp='value_range(-1, 1)')
  top = p.zero_shot(images, CLASSES, top_k=3, templates=TEMPLATES)
  probs = np.exp(logits * np.exp(2.3))   # t = exp(2.3) scales the cosines
  probs /= probs.sum(-1, keepdims=True)
  for row, want_row in zip(top, probs):
    assert [n for n, _ in row] == [CLASSES[i] for i in np.argsort(-want_row)]
    np.testing.assert_allclose([q for _, q in row], np.sort(want_row)[::-1], rtol=1e-4)


def test_text_transformer_file_is_named_vit_jax_lit_in_errors(sp_model, tmp_path):
  config = LAYOUTS['text_transformer'](sp_model)
  rng = np.random.default_rng(2)
  arrays = {**_image_tower(config, rng),
            **_text_transformer_tower(rng, SP_VOCAB + 1, config.max_len),
            't': np.zeros(1, np.float32)}
  np.savez(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'(?s)\[vit_jax LiT\].*txt/Embed_0/embedding: \(21, 16\)'):
    checkpoint.load_npz(str(tmp_path / 'bad.npz'), config)


def test_flaxformer_file_that_does_not_fit_names_its_keys(vocab_file, tmp_path):
  config = LAYOUTS['bert'](vocab_file)
  rng = np.random.default_rng(1)
  arrays = {**_image_tower(config, rng), **_bert_tower(rng, len(VOCAB)),
            't': np.zeros(1, np.float32)}
  del arrays['txt/BertEncoder_0/encoder_block/layer_sequence/layers_1/mlp_block/dense_layer/bias']
  arrays['txt/BertEncoder_0/pooler/dense/kernel'] = _random(rng, WIDTH, WIDTH)
  np.savez(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'(?s)\[vit_jax LiT, flaxformer BertEncoder\].*'
                     r'txt/layer_1/output/bias.*txt/BertEncoder_0/pooler/dense/kernel'):
    checkpoint.load_npz(str(tmp_path / 'bad.npz'), config)
