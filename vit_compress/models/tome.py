"""Token merging (ToMe, Bolya et al. 2023): bipartite soft matching.

After attention, tokens are split alternately into sets A and B; each A token
finds its most similar B token (cosine similarity of the attention keys, mean
over heads), and the r most similar pairs are merged by a size-weighted
average. Sizes are carried along so attention can weight a merged token by how
many patches it stands for (proportional attention). Prefix tokens (class,
distillation) are set aside and never merged, nor merged into.

Shapes stay static under jit: every layer removes exactly r tokens (fewer only
when fewer than 2r mergeable tokens remain).
"""
import jax.numpy as jnp


def merged_token_counts(num_tokens: int, num_prefix: int, r_per_layer):
  """Token count after each layer for a given schedule; mirrors merge_tokens."""
  counts = []
  for r in r_per_layer:
    rest = num_tokens - num_prefix
    num_tokens -= max(0, min(r, rest // 2))
    counts.append(num_tokens)
  return counts


def _gather(tokens, index):
  return jnp.take_along_axis(tokens, index[..., None], axis=1)


def merge_tokens(x, size, metric, r: int, num_prefix: int):
  """Merges r tokens of x (B, N, C); returns the new x and sizes (B, N - r, 1)."""
  prefix_x, x = x[:, :num_prefix], x[:, num_prefix:]
  prefix_size, size = size[:, :num_prefix], size[:, num_prefix:]
  metric = metric[:, num_prefix:]
  r = min(r, x.shape[1] // 2)
  if r <= 0:
    return jnp.concatenate([prefix_x, x], 1), jnp.concatenate([prefix_size, size], 1)

  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  scores = jnp.einsum('bic,bjc->bij', metric[:, ::2], metric[:, 1::2])
  best_score, best_dst = scores.max(axis=-1), scores.argmax(axis=-1)
  order = jnp.argsort(-best_score, axis=-1)
  src, kept = order[:, :r], jnp.sort(order[:, r:], axis=-1)  # sort keeps order
  dst = jnp.take_along_axis(best_dst, src, axis=1)

  weighted = x * size.astype(x.dtype)  # merge as size-weighted averages
  a_x, b_x = weighted[:, ::2], weighted[:, 1::2]
  a_size, b_size = size[:, ::2], size[:, 1::2]
  batch = jnp.arange(x.shape[0])[:, None]
  b_x = b_x.at[batch, dst].add(_gather(a_x, src))
  b_size = b_size.at[batch, dst].add(_gather(a_size, src))
  new_size = jnp.concatenate([_gather(a_size, kept), b_size], axis=1)
  new_x = jnp.concatenate([_gather(a_x, kept), b_x], axis=1) / new_size.astype(x.dtype)
  return (jnp.concatenate([prefix_x, new_x], axis=1),
          jnp.concatenate([prefix_size, new_size], axis=1))
