"""`Siamese`: one encoder applied to both images of a pair, one parameter tree for both.

It embeds the two images of every pair in a single pass over a (2B, ...)
batch: one matmul per layer instead of two, and the weights read once.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import normalize
from siamese_jax.losses.distances import euclidean_distance


class Siamese(nn.Module):
  """One encoder applied to both images of a pair; outputs their distance.

  Attributes:
    encoder: maps float[N, ...] images to float[N, D] embeddings; called as
      `encoder(x, train=...)`. Its parameters live under "encoder".
    fuse_branches: embed both images in one (2B, ...) pass (the default and
      the faster); False applies the encoder twice, for comparison.
    normalize: divide each embedding by its norm (max(||e||, 1e-12)), for
      the losses of unit embeddings (`Loss.normalize` in `siamese_jax.losses.LOSSES`).
  """

  encoder: nn.Module
  fuse_branches: bool = True
  normalize: bool = False

  def __call__(self, x1: jax.Array, x2: jax.Array, *, train: bool) -> jax.Array:
    """Distance between the embeddings of each pair.

    Args:
      x1: float[B, H, W] (or [B, H * W] for the MLP) first images.
      x2: same shape, second images.
      train: enables dropout; each image gets its own mask.

    Returns:
      float[B] Euclidean distances.
    """
    if x1.shape != x2.shape:
      raise ValueError(f"x1 and x2 must have the same shape, got {x1.shape} and {x2.shape}.")
    if not self.fuse_branches:
      return euclidean_distance(self.encode(x1, train=train), self.encode(x2, train=train))
    b = x1.shape[0]
    e = self.encode(jnp.concatenate([x1, x2], axis=0), train=train)
    return euclidean_distance(e[:b], e[b:])

  def encode(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[B, ...] images -> float[B, D] embeddings (a batch loss's training input)."""
    e = self.encoder(x, train=train)
    if self.normalize:
      e = normalize(e)
    return e

  def embed(self, x: jax.Array) -> jax.Array:
    """float[B, ...] images -> float[B, D] embeddings, no dropout."""
    return self.encode(x, train=False)
