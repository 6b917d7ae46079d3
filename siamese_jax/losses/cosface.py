"""`cosface_loss`: CosFace, the large margin cosine loss (Wang et al. 2018).

The mean over i of -log softmax_c(scale (s_ic - margin [c = y_i]))[y_i]: the
true class's cosine must beat every other by `margin` to cost little.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.proxies import check_proxies, class_cross_entropy, cosines


def cosface_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  proxies: jax.Array,
  scale: float = 64.0,
  margin: float = 0.35,
  proxy_mask: jax.Array | None = None,
) -> jax.Array:
  """float[]: the module's loss; embeddings float[N, D], labels int[N], proxies float[C, D]."""
  check_proxies(embeddings, labels, proxies, "cosface_loss")
  s = cosines(embeddings, proxies)
  own = labels[:, None] == jnp.arange(proxies.shape[0])[None, :]
  return class_cross_entropy(scale * (s - margin * own), labels, proxy_mask)
