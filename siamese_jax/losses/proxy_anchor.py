"""`proxy_anchor_loss`: Proxy-Anchor (Kim et al. 2020).

With s_ic the cosines (`proxies.cosines`), P+ the classes present in the
batch and C the proxies:

    L = 1/|P+| sum_{c in P+} log(1 + sum_{i: y_i = c} exp(-alpha (s_ic - delta)))
      + 1/C    sum_{c}       log(1 + sum_{i: y_i != c} exp(alpha (s_ic + delta)))

Each proxy is an anchor: it pulls its class's images and pushes every other
image, weighted by how hard each is (the soft max inside the log).
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.proxies import MASKED, check_proxies, cosines


def _log1p_sum_exp(values: jax.Array, mask: jax.Array) -> jax.Array:
  """float[C]: log(1 + sum over i where mask of exp(values_ic)), stably, per column."""
  a = jax.nn.logsumexp(jnp.where(mask, values, MASKED), axis=0)
  return jnp.logaddexp(0.0, a)


def proxy_anchor_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  proxies: jax.Array,
  alpha: float = 32.0,
  delta: float = 0.1,
  proxy_mask: jax.Array | None = None,
) -> jax.Array:
  """float[]: the module's loss; embeddings float[N, D], labels int[N], proxies float[C, D]."""
  check_proxies(embeddings, labels, proxies, "proxy_anchor_loss")
  s = cosines(embeddings, proxies)  # [N, C]
  own = labels[:, None] == jnp.arange(proxies.shape[0])[None, :]
  present = own.any(axis=0)
  positive = _log1p_sum_exp(-alpha * (s - delta), own)
  negative = _log1p_sum_exp(alpha * (s + delta), ~own)
  kept = jnp.ones_like(present) if proxy_mask is None else proxy_mask
  pos = jnp.sum(jnp.where(present, positive, 0.0)) / jnp.maximum(jnp.sum(present), 1)
  neg = jnp.sum(jnp.where(kept, negative, 0.0)) / jnp.maximum(jnp.sum(kept), 1)
  return pos + neg
