"""LiT two-tower model: image tower `img`, text tower `txt`, temperature `t`.

Returns normalised embeddings and the temperature-scaled similarity logits
(`logits[i, j]` = t * <image_i, text_j>), as used by the contrastive loss and
by zero-shot classification. Either input may be None (embed one side only).
"""

import flax.linen as nn
import jax.numpy as jnp


def _normalize(z):
  return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)


class LiT(nn.Module):
  # Flax names a submodule given as an attribute after the attribute, so these
  # names are the parameter prefixes of the two towers (as in big_vision).
  img: nn.Module
  txt: nn.Module
  temperature_init: float = 0.0

  @nn.compact
  def __call__(self, images=None, tokens=None, *, train: bool = False):
    out = {}
    if images is not None:
      out['zimg'] = _normalize(self.img(images, train=train))
    if tokens is not None:
      out['ztxt'] = _normalize(self.txt(tokens, train=train))
    t = self.param('t', nn.initializers.constant(self.temperature_init), (1,),
                   jnp.float32)
    out['t'] = jnp.exp(t[0])
    if images is not None and tokens is not None:
      out['logits'] = out['zimg'] @ out['ztxt'].T * out['t']
    return out
