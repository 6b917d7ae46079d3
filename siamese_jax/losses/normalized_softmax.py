"""`normalized_softmax_loss`: Normalized Softmax (Zhai & Wu 2019).

The mean over i of -log softmax_c(s_ic / temperature)[y_i], s the cosines
of embeddings and proxies (`proxies.cosines`): a softmax classifier whose
weights and inputs are unit vectors.
"""

import jax

from siamese_jax.losses.proxies import check_proxies, class_cross_entropy, cosines


def normalized_softmax_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  proxies: jax.Array,
  temperature: float = 0.05,
  proxy_mask: jax.Array | None = None,
) -> jax.Array:
  """float[]: the module's loss; embeddings float[N, D], labels int[N], proxies float[C, D]."""
  check_proxies(embeddings, labels, proxies, "normalized_softmax_loss")
  return class_cross_entropy(cosines(embeddings, proxies) / temperature, labels, proxy_mask)
