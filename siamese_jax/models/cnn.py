"""`CNN`: a small convolutional encoder for MNIST-sized images (`--encoder cnn`)."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from siamese_jax.models.layers import embedding_head, patches_3x3_stride2


class CNN(nn.Module):
  """Two 3x3 stride-2 convolutions with ReLU, then a Dense embedding.

  On 28x28: 16 and 32 channels (28 -> 14 -> 7), Dense 128: 205,632
  parameters, 0.44 M multiply-adds an image (the MLP: 0.13 M). Each
  convolution is `patches_3x3_stride2` and a Dense, the arithmetic of
  `nn.Conv(width, (3, 3), strides=2)`.
  """

  features: Sequence[int] = (16, 32)
  embed_dim: int = 128
  dropout: float = 0.1
  final_relu: bool = True
  dropout_rng: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[B, H, W] images in [0, 1] -> float[B, embed_dim] embeddings."""
    if x.ndim == 3:
      x = x[..., None]  # One channel: (B, H, W, 1), NHWC.
    for width in self.features:
      x = nn.relu(nn.Dense(width, name=f"conv_{width}")(patches_3x3_stride2(x)))
    return embedding_head(self, x, train)


def from_config(config) -> CNN:
  """`--encoder cnn`: the embedding width is `hidden_sizes[-1]`."""
  return CNN(
    embed_dim=config.hidden_sizes[-1],
    dropout=config.dropout,
    final_relu=config.final_relu,
    dropout_rng=config.dropout_rng,
  )
