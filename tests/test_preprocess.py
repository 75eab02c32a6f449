"""Preprocessing ops: safe parsing, start-up validation, and what each op does."""
import numpy as np
import pytest
import tensorflow as tf

from vit_compress import data  # pylint: disable=unused-import  (registers the ops)
from vit_compress import registry
from vit_compress.data import preprocess


def _image(h=8, w=8, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), np.uint8)


def _run(pp, example, **context):
  out = preprocess.build(pp, **context)(
      {k: tf.constant(v) for k, v in example.items()})
  return {k: v.numpy() for k, v in out.items()}


def _seeded(image, seed):
  return {'image': image, '_rng': np.array([seed, 7], np.int64)}


# ----------------------------------------------------------------- parsing
def test_parse_reads_literals_and_splits_outside_quotes():
  specs = preprocess.parse(
      'decode|resize((8, 12), method="area")|'
      "captions(('a {} | b', 'the {}.'), sample=False)|flip_lr")
  assert [s.name for s in specs] == ['decode', 'resize', 'captions', 'flip_lr']
  assert specs[1].args == ((8, 12),) and specs[1].kwargs == {'method': 'area'}
  assert specs[2].args == (('a {} | b', 'the {}.'),)
  assert specs[2].kwargs == {'sample': False}


@pytest.mark.parametrize('pp', [
    "resize(__import__('os').getcwd())",   # code, not a literal
    'resize(16',                            # syntax
    'decode||flip_lr',                      # empty op
    'decode.x',                             # not a name or call
    'resize(**{"size": 4})',
])
def test_parse_rejects_anything_but_literals(pp):
  with pytest.raises(ValueError, match='preprocessing op'):
    preprocess.parse(pp)


def test_misspelled_op_lists_known_names_at_build_time():
  with pytest.raises(registry.UnknownNameError) as e:
    preprocess.build('decode|flip_rl|value_range(-1, 1)')
  message = str(e.value)
  assert "Did you mean 'flip_lr'" in message
  for name in ('decode', 'resize', 'resize_small', 'central_crop',
               'random_crop', 'inception_crop', 'to_rgb', 'value_range',
               'onehot', 'tokenize', 'captions', 'copy', 'keep', 'drop'):
    assert name in message
  assert 'decode|flip_rl|value_range(-1, 1)' in message


@pytest.mark.parametrize('pp, match', [
    ('resize(8, 9, 10, 11, 12)', 'Usage: resize'),
    ('resize(0)', 'positive int'),
    ('resize(8, method="cubic")', 'Unknown resize method'),
    ('onehot', 'number of classes'),
    ('value_range(-1, 1, nonsense=3)', 'nonsense'),
])
def test_bad_arguments_fail_at_build_time(pp, match):
  with pytest.raises(ValueError, match=match):
    preprocess.build(pp)


def test_missing_key_names_the_op_and_the_keys():
  with pytest.raises(KeyError, match="'resize' reads key 'teacher_image'"):
    _run('resize(4, key="teacher_image")', {'image': _image()})


# ------------------------------------------------------------------ images
def test_decode_png_and_grayscale_to_rgb():
  gray = _image(c=1)
  png = tf.io.encode_png(gray).numpy()
  out = _run('decode', {'image': png})['image']
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.repeat(gray, 3, axis=-1))
  out = _run('decode(channels=1)|to_rgb', {'image': png})['image']
  np.testing.assert_array_equal(out, np.repeat(gray, 3, axis=-1))


def test_value_range_maps_pixels_linearly():
  image = np.array([[[0], [51], [255]]], np.uint8)
  out = _run('value_range(-1, 1)', {'image': image})['image']
  np.testing.assert_allclose(out.ravel(), [-1, -1 + 2 * 51 / 255, 1],
                             rtol=1e-6)
  out = _run('value_range(0, 1)', {'image': image})['image']
  np.testing.assert_allclose(out.ravel(), [0, 0.2, 1], rtol=1e-6)


def test_area_resize_is_block_mean_and_keeps_uint8():
  image = _image()
  out = _run('resize(4, method="area")', {'image': image})['image']
  block_mean = image.reshape(4, 2, 4, 2, 3).astype(np.float64).mean((1, 3))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.round(block_mean))


def test_resize_small_keeps_aspect_and_central_crop_slices():
  image = _image(8, 16)
  assert _run('resize_small(4)', {'image': image})['image'].shape == (4, 8, 3)
  out = _run('central_crop((4, 6))', {'image': image})['image']
  np.testing.assert_array_equal(out, image[2:6, 5:11])


def test_random_crop_is_a_window_chosen_by_the_seed():
  image = _image()
  crops = [_run('random_crop(5)', _seeded(image, s))['image']
           for s in range(12)]
  offsets = set()
  for crop in crops:
    hits = [(i, j) for i in range(4) for j in range(4)
            if np.array_equal(crop, image[i:i + 5, j:j + 5])]
    assert len(hits) == 1
    offsets.add(hits[0])
  assert len(offsets) > 1   # 12 draws from 16 positions
  again = _run('random_crop(5)', _seeded(image, 3))['image']
  np.testing.assert_array_equal(again, crops[3])


def test_flip_lr_flips_about_half_the_time_deterministically():
  image = _image()
  flipped = []
  for s in range(40):
    out = _run('flip_lr', _seeded(image, s))['image']
    assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    flipped.append(np.array_equal(out, image[:, ::-1]))
  assert 0 < sum(flipped) < 40
  again = [np.array_equal(_run('flip_lr', _seeded(image, s))['image'],
                          image[:, ::-1]) for s in range(5)]
  assert again == flipped[:5]


def test_inception_crop_size_and_determinism():
  image = _image(16, 16)
  a = _run('inception_crop(6)', _seeded(image, 1))['image']
  b = _run('inception_crop(6)', _seeded(image, 1))['image']
  assert a.shape == (6, 6, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  outs = {_run('inception_crop(6)', _seeded(image, s))['image'].tobytes()
          for s in range(6)}
  assert len(outs) > 1


def test_random_ops_draw_independent_seeds():
  """Two random ops in one chain do not reuse the same seed."""
  image = _image()
  out = _run('random_crop(7)|copy("image", "b")|random_crop(5)|'
             'random_crop(5, key="b")', _seeded(image, 0))
  assert not np.array_equal(out['image'], out['b'])


def test_teacher_sees_the_same_augmented_view_at_its_own_size():
  image = _image()
  pp = ('inception_crop(6)|flip_lr|copy("image", "teacher_image")|'
        'resize(12, key="teacher_image")|value_range(-1, 1)|'
        'value_range(-1, 1, key="teacher_image")')
  for seed in range(4):
    out = _run(pp, _seeded(image, seed))
    student = (out['image'] + 1) * 127.5
    assert out['image'].shape == (6, 6, 3)
    assert out['teacher_image'].shape == (12, 12, 3)
    expected = tf.image.resize(np.round(student).astype(np.uint8), (12, 12))
    expected = np.round(expected.numpy()) / 127.5 - 1
    np.testing.assert_allclose(out['teacher_image'], expected, atol=1e-5)


# ------------------------------------------------------------ keys, labels
def test_onehot_uses_dataset_classes_unless_given():
  assert _run('onehot', {'label': 3}, num_classes=5)['labels'].tolist() == [
      0, 0, 0, 1, 0]
  assert _run('onehot(7)', {'label': 3}, num_classes=5)['labels'].shape == (7,)
  multi = _run('onehot(4, key="tags", outkey="hot")',
               {'tags': np.array([0, 2])})
  assert multi['hot'].tolist() == [1, 0, 1, 0]


def test_copy_keep_drop():
  ex = {'image': _image(), 'label': 1, 'extra': 2.0}
  out = _run('copy("label", "y")|drop("extra")', ex)
  assert sorted(out) == ['image', 'label', 'y'] and out['y'] == 1
  assert sorted(_run('keep("label")', ex)) == ['label']
