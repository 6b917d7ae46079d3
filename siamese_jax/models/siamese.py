"""`Siamese`: one encoder applied to both images of a pair, one parameter tree for both.

Both images go through one (2B, ...) pass: one matmul per layer, weights read once.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import normalize
from siamese_jax.losses.distances import euclidean_distance


class Siamese(nn.Module):
  """One encoder (parameters under "encoder") on both images of a pair; outputs their distance.

  `fuse_branches=False` applies it twice, for comparison. `normalize` divides
  each embedding by max(||e||, 1e-12), for the losses of unit embeddings.
  """

  encoder: nn.Module
  fuse_branches: bool = True
  normalize: bool = False

  def __call__(self, x1: jax.Array, x2: jax.Array, *, train: bool) -> jax.Array:
    """float[B] distances between embeddings of float[B, ...] x1 and x2; a mask per image."""
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
