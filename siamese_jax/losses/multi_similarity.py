"""`multi_similarity_loss`: Wang et al. 2019, with its own pair mining, on cosine similarity.

On S = z z^T (z the unit embeddings), for each anchor i with both
positives and negatives: a negative k is kept if S_ik + epsilon > the
smallest positive similarity of i, a positive j if S_ij - epsilon < the
largest negative similarity of i; the anchor's term is

    (1/alpha) log(1 + sum over kept j of exp(-alpha (S_ij - base)))
  + (1/beta)  log(1 + sum over kept k of exp( beta (S_ik - base))).

The loss is the sum of the terms divided by N, every anchor counted.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, label_masks, normalize


def multi_similarity_loss(
  embeddings: jax.Array,
  labels: jax.Array,
  alpha: float = 2.0,
  beta: float = 50.0,
  base: float = 0.5,
  epsilon: float = 0.1,
):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "multi_similarity_loss")
  z = normalize(embeddings)
  s = z @ z.T
  masks = label_masks(labels)
  min_positive = jnp.min(jnp.where(masks.positive, s, jnp.inf), axis=1, keepdims=True)
  max_negative = jnp.max(jnp.where(masks.negative, s, -jnp.inf), axis=1, keepdims=True)
  keep_negative = masks.negative & (s + epsilon > min_positive)
  keep_positive = masks.positive & (s - epsilon < max_negative)
  # |S| <= 1, so neither exponential can overflow in float32.
  pos = jnp.sum(jnp.where(keep_positive, jnp.exp(-alpha * (s - base)), 0.0), axis=1)
  neg = jnp.sum(jnp.where(keep_negative, jnp.exp(beta * (s - base)), 0.0), axis=1)
  term = jnp.log1p(pos) / alpha + jnp.log1p(neg) / beta
  valid = masks.positive.any(axis=1) & masks.negative.any(axis=1)
  return jnp.sum(jnp.where(valid, term, 0.0)) / embeddings.shape[0]
