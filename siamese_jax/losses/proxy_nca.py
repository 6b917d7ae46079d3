"""`proxy_nca_loss`: ProxyNCA in its ProxyNCA++ form (Teh et al. 2020).

On unit embeddings and proxies: the mean over i of
-log softmax_c(-||x_i - p_c||^2 / temperature)[y_i], where for unit vectors
||x_i - p_c||^2 = 2 - 2 s_ic (`proxies.cosines`).
"""

import jax

from siamese_jax.losses.proxies import check_proxies, class_cross_entropy, cosines


def proxy_nca_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  proxies: jax.Array,
  temperature: float = 1 / 9,
  proxy_mask: jax.Array | None = None,
) -> jax.Array:
  """float[]: the module's loss; embeddings float[N, D], labels int[N], proxies float[C, D]."""
  check_proxies(embeddings, labels, proxies, "proxy_nca_loss")
  squared = 2.0 - 2.0 * cosines(embeddings, proxies)
  return class_cross_entropy(-squared / temperature, labels, proxy_mask)
