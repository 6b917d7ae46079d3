"""The shared MLP and the Siamese wrapper that applies it to both images.

`MLP` is the original's base network: 784 -> Dense 128 ReLU -> Dropout 0.1
-> Dense 128 ReLU -> Dropout 0.1 -> Dense 128 ReLU (133,504 parameters).
Kernels start Glorot-uniform and biases at zero, as Keras' Dense does.

`SiameseMLP` holds one `MLP`, so one parameter tree serves both inputs. It
embeds the two images of every pair in a single pass over a (2B, 784) batch:
one matmul per layer instead of two, and the weights read once.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.losses import euclidean_distance


class MLP(nn.Module):
  """Dense+ReLU layers with dropout between them.

  Attributes:
    hidden_sizes: width of each Dense layer.
    dropout: rate of the dropout after every layer but the last.
    final_relu: whether the last layer has a ReLU (the original's does; a
      2-D embedding for plotting is better without one).
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  dropout: float = 0.1
  final_relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Embeds a batch of images.

    Args:
      x: float[B, 784] or float[B, 28, 28], values in [0, 1].
      train: enables dropout (needs a "dropout" rng).

    Returns:
      float[B, hidden_sizes[-1]] embeddings.
    """
    x = x.reshape(x.shape[0], -1)
    last = len(self.hidden_sizes) - 1
    for i, width in enumerate(self.hidden_sizes):
      x = nn.Dense(width, kernel_init=nn.initializers.glorot_uniform())(x)
      if i < last or self.final_relu:
        x = nn.relu(x)
      if i < last:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class SiameseMLP(nn.Module):
  """One MLP applied to both images of a pair; outputs their distance.

  Attributes:
    hidden_sizes, dropout, final_relu: as for `MLP`.
    fuse_branches: embed both images in one (2B, 784) pass (the default and
      the faster); False applies the MLP twice, for comparison.
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  dropout: float = 0.1
  final_relu: bool = True
  fuse_branches: bool = True

  def setup(self):
    self.encoder = MLP(self.hidden_sizes, self.dropout, self.final_relu)

  def __call__(self, x1: jax.Array, x2: jax.Array, *, train: bool) -> jax.Array:
    """Distance between the embeddings of each pair.

    Args:
      x1: float[B, 784] (or [B, 28, 28]) first images.
      x2: same shape, second images.
      train: enables dropout; each image gets its own mask.

    Returns:
      float[B] Euclidean distances.
    """
    if x1.shape != x2.shape:
      raise ValueError(f"x1 and x2 must have the same shape, got {x1.shape} and {x2.shape}.")
    b = x1.shape[0]
    x1, x2 = x1.reshape(b, -1), x2.reshape(b, -1)
    if not self.fuse_branches:
      return euclidean_distance(self.encoder(x1, train=train), self.encoder(x2, train=train))
    e = self.encoder(jnp.concatenate([x1, x2], axis=0), train=train)
    return euclidean_distance(e[:b], e[b:])

  def embed(self, x: jax.Array) -> jax.Array:
    """float[B, 784] (or [B, 28, 28]) -> float[B, D] embeddings, no dropout."""
    return self.encoder(x, train=False)
