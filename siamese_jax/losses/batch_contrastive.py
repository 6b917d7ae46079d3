"""`batch_contrastive_loss`: the contrastive loss over every pair of a batch (Hadsell et al. 2006).

Over the unordered pairs i < j of a batch: the mean of d^2 over the
positive pairs plus the mean of max(margin - d, 0)^2 over the negative
pairs; an empty set adds 0.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, label_masks, masked_mean, pairwise_distance_matrix


def batch_contrastive_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "batch_contrastive_loss")
  d = pairwise_distance_matrix(embeddings)
  masks = label_masks(labels)
  upper = jnp.triu(jnp.ones(d.shape, bool), k=1)  # each unordered pair once
  positive = masked_mean(jnp.square(d), masks.positive & upper)
  negative = masked_mean(jnp.square(jnp.maximum(margin - d, 0.0)), masks.negative & upper)
  return positive + negative
