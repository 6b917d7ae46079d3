"""What every batch loss builds on: the pairwise distance and similarity matrices, and masks.

A batch loss sees N embeddings and their N integer labels, and learns from
every pair among them. Here, for all of them:

* `pairwise_distance_matrix(e)`: float[N, N], d_ij = sqrt(max(||e_i - e_j||^2,
  1e-7)): `siamese_jax.losses.distances.pairwise_distances`, from the
  differences themselves, so the gradient is finite on identical rows;
* `normalize(e)`: z = e / max(||e||, 1e-12), with a finite gradient at 0;
* `label_masks(y)`: bool[N, N] positives (same label, j != i) and negatives.

Empty sets are handled with masks, never Python branches: a masked mean of
nothing is 0, so every loss is jittable and finite on any batch.
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
  """float[]: the share of a batch's images whose nearest other image has their label.

  A batch loss's training accuracy (precision at 1 within the batch), as
  `pair_accuracy` is the pair loss's.
  """
  d = pairwise_distance_matrix(embeddings)
  d = jnp.where(jnp.eye(labels.shape[0], dtype=bool), jnp.inf, d)
  return jnp.mean((labels[jnp.argmin(d, axis=1)] == labels).astype(jnp.float32))
