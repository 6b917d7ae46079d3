"""Triplet losses with their mining: batch-hard (Hermans et al. 2017) and semi-hard (FaceNet).

* `triplet_batch_hard_loss`: for each anchor with at least one positive and
  one negative, max(max over positives d - min over negatives d + margin, 0);
  the mean over those anchors, 0 if none.
* `triplet_semi_hard_loss`: for each ordered positive pair (a, p) whose
  anchor has a negative, the negative n nearest to a among those farther
  than p (d(a, n) > d(a, p)), else the farthest negative; the term is
  max(d(a, p) - d(a, n) + margin, 0), averaged over those pairs, 0 if none.
  Schroff et al. 2015's semantics, as TensorFlow Addons implements them.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, label_masks, masked_mean, pairwise_distance_matrix


def triplet_batch_hard_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 0.2):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "triplet_batch_hard_loss")
  d = pairwise_distance_matrix(embeddings)
  masks = label_masks(labels)
  hardest_positive = jnp.max(jnp.where(masks.positive, d, -jnp.inf), axis=1)
  hardest_negative = jnp.min(jnp.where(masks.negative, d, jnp.inf), axis=1)
  valid = masks.positive.any(axis=1) & masks.negative.any(axis=1)
  # Where an anchor lacks either, its (infinite) term is masked out, and
  # where() keeps the gradient of the infinities away from the loss.
  term = jnp.maximum(jnp.where(valid, hardest_positive - hardest_negative, 0.0) + margin, 0.0)
  return masked_mean(term, valid)


def triplet_semi_hard_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 0.2):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "triplet_semi_hard_loss")
  d = pairwise_distance_matrix(embeddings)
  masks = label_masks(labels)
  # For the pair (a, p): negatives n of a with d(a, n) > d(a, p), [a, p, n].
  farther = masks.negative[:, None, :] & (d[:, None, :] > d[:, :, None])
  semi_hard = jnp.min(jnp.where(farther, d[:, None, :], jnp.inf), axis=2)  # [a, p]
  farthest = jnp.max(jnp.where(masks.negative, d, -jnp.inf), axis=1)  # [a]
  chosen = jnp.where(farther.any(axis=2), semi_hard, farthest[:, None])
  valid = masks.positive & masks.negative.any(axis=1)[:, None]
  term = jnp.maximum(jnp.where(valid, d - chosen, 0.0) + margin, 0.0)
  return masked_mean(term, valid)
