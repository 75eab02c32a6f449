"""vit_jax's model getters return our configs of the same models (exact counts)."""
import pytest

from test_zoo import PUBLISHED_PARAMS
from vit_compress import models
from vit_compress import zoo

# DESIGN.md §6: every getter name of vit_jax's configs/models.py.
VIT_JAX_NAMES = (
    'testing', 'testing_unpooled', 'ti16', 's16', 'b16', 'l16', 'h14',
    's16_gap_norep', 'b16_gap_norep', 'b8', 's32', 'b32', 'l32',
    's32_gap_norep', 'b32_gap_norep', 'r_ti16', 'r50_b16', 'r26_b32', 'r26_s32',
    'r50_l32', 'mixer_b16', 'mixer_b32', 'mixer_l16', 'lit_b16b', 'lit_b16b_2',
    'lit_l16l', 'lit_l16s', 'lit_l16ti')


def _params(config) -> int:
  return models.count_params(models.param_shapes(config))  # eval_shape: no memory


def test_every_vit_jax_getter_exists():
  assert sorted(VIT_JAX_NAMES) == sorted(list(zoo.VIT_JAX_GETTERS) + ['testing_unpooled'])
  for short in VIT_JAX_NAMES:
    assert callable(getattr(zoo, f'get_{short}_config'))
  with pytest.raises(ValueError, match="no counterpart here.*'token' and 'gap'"):
    zoo.get_testing_unpooled_config()


@pytest.mark.parametrize('short', [s for s, (n, o) in zoo.VIT_JAX_GETTERS.items()
                                   if n in PUBLISHED_PARAMS and not o])
def test_getter_has_the_published_parameter_count(short):
  name, _ = zoo.VIT_JAX_GETTERS[short]
  config = getattr(zoo, f'get_{short}_config')()
  assert config.name == name
  assert _params(config) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize('short,base', [('s16_gap_norep', 'S_16'),
                                        ('b32_gap_norep', 'B_32')])
def test_gap_variants_drop_the_class_token_and_its_position(short, base):
  config = getattr(zoo, f'get_{short}_config')()
  assert config.classifier == 'gap' and config.representation_size is None
  hidden = config.hidden_size
  assert _params(config) == PUBLISHED_PARAMS[base] - 2 * hidden


def test_lit_b16b_adds_an_image_projection():
  # LiT-B16B = LiT-B16B_2 plus a 768 -> 768 image projection (kernel and bias).
  assert _params(zoo.get_lit_b16b_config()) == (
      PUBLISHED_PARAMS['LiT_B16B_2'] + 768 * 768 + 768)
