"""`arcface_loss`: ArcFace, the additive angular margin loss (Deng et al. 2019).

With theta_i = arccos(clip(s_{i, y_i}, -1 + 1e-7, 1 - 1e-7)), the true
class's logit is scale cos(theta_i + margin) and every other class's is
scale s_ic; the loss is the mean over i of -log softmax at y_i. The clip
keeps arccos's gradient finite where an embedding lies on its proxy.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.proxies import check_proxies, class_cross_entropy, cosines


def arcface_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  proxies: jax.Array,
  scale: float = 64.0,
  margin: float = 0.5,
  proxy_mask: jax.Array | None = None,
) -> jax.Array:
  """float[]: the module's loss; embeddings float[N, D], labels int[N], proxies float[C, D]."""
  check_proxies(embeddings, labels, proxies, "arcface_loss")
  s = cosines(embeddings, proxies)
  own = labels[:, None] == jnp.arange(proxies.shape[0])[None, :]
  true = jnp.sum(jnp.where(own, s, 0.0), axis=1)
  theta = jnp.arccos(jnp.clip(true, -1 + 1e-7, 1 - 1e-7))
  logits = jnp.where(own, jnp.cos(theta + margin)[:, None], s)
  return class_cross_entropy(scale * logits, labels, proxy_mask)
