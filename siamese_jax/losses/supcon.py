"""`supcon_loss`: supervised contrastive loss (Khosla et al. 2020, L_out); NT-Xent with two views.

On s = z z^T / temperature (z the unit embeddings), for each anchor i with
a positive: -mean over its positives p of (s_ip - logsumexp over a != i of
s_ia). The mean over those anchors; 0 if none.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, label_masks, masked_mean, normalize


def supcon_loss(embeddings: jax.Array, labels: jax.Array, temperature: float = 0.1):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "supcon_loss")
  z = normalize(embeddings)
  s = (z @ z.T) / temperature
  n = labels.shape[0]
  others = ~jnp.eye(n, dtype=bool)
  # -1e9 rather than -inf: exp underflows to 0 with a finite gradient.
  log_denominator = jax.nn.logsumexp(jnp.where(others, s, -1e9), axis=1, keepdims=True)
  positives = label_masks(labels).positive
  per_anchor = jnp.sum(jnp.where(positives, s - log_denominator, 0.0), axis=1)
  num_positives = jnp.sum(positives, axis=1)
  loss = -per_anchor / jnp.maximum(num_positives, 1)
  return masked_mean(loss, num_positives > 0)
