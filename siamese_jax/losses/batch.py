"""What every batch loss builds on: distance and similarity matrices, and label masks.

`pairwise_distance_matrix(e)` is `distances.pairwise_distances` (finite
gradient on identical rows); `normalize(e)` = e / max(||e||, 1e-12);
`label_masks(y)` gives bool[N, N] positives (j != i) and negatives. Empty
sets are masked, never branched on: every loss is jittable and finite on
any batch.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from siamese_jax.losses.distances import pairwise_distances


class LabelMasks(NamedTuple):
  """bool[N, N] masks of a batch's pairs by label."""

  positive: jax.Array  # same label, j != i
  negative: jax.Array  # another label


def check(embeddings: jax.Array, labels: jax.Array, name: str) -> None:
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(
      f"{name} needs embeddings (N, D) and labels (N,), got {embeddings.shape} and {labels.shape}."
    )


def label_masks(labels: jax.Array) -> LabelMasks:
  same = labels[:, None] == labels[None, :]
  eye = jnp.eye(labels.shape[0], dtype=bool)
  return LabelMasks(same & ~eye, ~same)


def pairwise_distance_matrix(embeddings: jax.Array) -> jax.Array:
  """float[N, N] Euclidean distances, clamped as the model's (finite gradient where i == j)."""
  return pairwise_distances(embeddings, embeddings)


def normalize(embeddings: jax.Array) -> jax.Array:
  """z = e / max(||e||, 1e-12), row by row; sqrt of a clamped square keeps the gradient finite."""
  norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(embeddings), axis=-1, keepdims=True), 1e-24))
  return embeddings / norm


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` where `mask`; 0 where the mask is empty."""
  count = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1)


def nearest_neighbour_accuracy(embeddings: jax.Array, labels: jax.Array) -> jax.Array:
  """float[]: the share of images whose nearest other image in the batch has their label."""
  d = pairwise_distance_matrix(embeddings)
  d = jnp.where(jnp.eye(labels.shape[0], dtype=bool), jnp.inf, d)
  return jnp.mean((labels[jnp.argmin(d, axis=1)] == labels).astype(jnp.float32))
