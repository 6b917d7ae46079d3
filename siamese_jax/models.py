"""The encoders and the Siamese wrapper that applies one to both images.

An encoder is any Flax module called as `encoder(x, train=...)` that maps
images float[N, H, W] (values in [0, 1]) to embeddings float[N, D]. Two ship
with the library:

* `MLP`, the original's base network: flatten -> Dense 128 ReLU -> Dropout
  0.1 -> Dense 128 ReLU -> Dropout 0.1 -> Dense 128 ReLU (133,504
  parameters on 28x28 images). Kernels start Glorot-uniform and biases at
  zero, as Keras' Dense does.
* `CNN`, a small convolutional encoder (`--encoder cnn`).
* `Conv4`, four convolution blocks for characters (`--encoder conv4`,
  Omniglot's default).

`Siamese` holds one encoder, so one parameter tree serves both inputs. It
embeds the two images of every pair in a single pass over a (2B, ...)
batch: one matmul per layer instead of two, and the weights read once.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.config import ENCODERS
from siamese_jax.dropout import dropout_layer
from siamese_jax.losses import euclidean_distance


class MLP(nn.Module):
  """Dense+ReLU layers with dropout between them.

  Attributes:
    hidden_sizes: width of each Dense layer.
    dropout: rate of the dropout after every layer but the last.
    final_relu: whether the last layer has a ReLU (the original's does; a
      2-D embedding for plotting is better without one).
    dropout_rng: where the dropout masks come from: "hash" (the fast
      counter-based hash of `siamese_jax.dropout`) or "threefry" (flax's
      `nn.Dropout`, JAX's standard PRNG).
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  dropout: float = 0.1
  final_relu: bool = True
  dropout_rng: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Embeds a batch of images.

    Args:
      x: float[B, H, W] or float[B, H * W], values in [0, 1].
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
        x = dropout_layer(self.dropout, self.dropout_rng)(x, deterministic=not train)
    return x


def embedding_head(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """A conv encoder's last part: flatten, dropout, Dense to `embed_dim`, ReLU if `final_relu`.

  Called from inside `module`'s compact `__call__`, so the Dense layer is
  one of its parameters (`Dense_0`).
  """
  x = x.reshape(x.shape[0], -1)
  x = dropout_layer(module.dropout, module.dropout_rng)(x, deterministic=not train)
  x = nn.Dense(module.embed_dim, kernel_init=nn.initializers.glorot_uniform())(x)
  return nn.relu(x) if module.final_relu else x


def patches_3x3_stride2(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, ceil(H/2), ceil(W/2), 9 * C]: 3x3 windows, stride 2.

  The windows of a 'SAME'-padded 3x3 convolution with stride 2, gathered by
  nine strided slices (im2col). A convolution is then one matmul: on CPU,
  XLA runs that at matmul speed, while its native convolution and the
  convolution's gradients were far slower (docs/performance.md).
  """
  b, h, w, c = x.shape
  ho, wo = -(-h // 2), -(-w // 2)
  # SAME padding for stride 2, kernel 3: total pad max(3 - 2 + ((H - 1) % 2 ... )),
  # i.e. 1 before and what reaches the last window after.
  pad_h, pad_w = max(2 * (ho - 1) + 3 - h, 0), max(2 * (wo - 1) + 3 - w, 0)
  x = jnp.pad(
    x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
  )
  windows = [
    x[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2, :] for i in range(3) for j in range(3)
  ]
  return jnp.concatenate(windows, axis=-1)


class CNN(nn.Module):
  """Two 3x3 stride-2 convolutions with ReLU, then a Dense embedding.

  On 28x28 images: 16 and 32 channels (28 -> 14 -> 7), a 7x7x32 map, Dense
  128: 205,632 parameters and about 0.44 M multiply-adds per image (the
  MLP: 0.13 M); the convolutions' weight sharing is what the MLP lacks for
  images. Each convolution is `patches_3x3_stride2` followed by a Dense
  layer, the same arithmetic as `nn.Conv(width, (3, 3), strides=2)`.

  Attributes:
    features: channels of each conv stage.
    embed_dim: width of the final Dense layer (the embedding).
    dropout: rate of the dropout before the final Dense layer.
    final_relu: whether the embedding has a ReLU, as for `MLP`.
    dropout_rng: "hash" or "threefry", as for `MLP`.
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


def patches_3x3(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, H, W, 9 * C]: the 3x3 windows of a 'SAME' convolution."""
  h, w = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], -1)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, H // 2, W // 2, C]: max over 2x2 blocks (an odd edge is dropped).

  A reshape and a max rather than `nn.max_pool`'s reduce-window, whose
  gradient XLA's CPU backend runs several times slower.
  """
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv4(nn.Module):
  """Four blocks of 3x3 convolution, LayerNorm, ReLU and 2x2 max-pooling, then Dense.

  The few-shot literature's standard backbone (Vinyals et al. 2016; Snell et
  al. 2017) for Omniglot's characters: 28x28 -> 14 -> 7 -> 3 -> 1, a
  1x1x64 map on 28x28 images (larger images keep a larger map). LayerNorm
  over the channels of each position stands in for the usual BatchNorm: it
  needs no running statistics, so the step stays a pure function of
  (params, batch, key) and training and embedding compute the same thing.
  Each convolution is `patches_3x3` then one Dense layer (im2col), as `CNN`
  does, for the same reason (see `patches_3x3_stride2`).

  Attributes:
    channels: width of every block.
    embed_dim: width of the final Dense layer (the embedding).
    dropout: rate of the dropout before the final Dense layer.
    final_relu: whether the embedding has a ReLU, as for `MLP`.
    dropout_rng: "hash" or "threefry", as for `MLP`.
  """

  channels: int = 64
  embed_dim: int = 128
  dropout: float = 0.0
  final_relu: bool = False
  dropout_rng: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[B, H, W] images in [0, 1] -> float[B, embed_dim] embeddings."""
    if x.ndim == 3:
      x = x[..., None]
    for i in range(4):
      x = nn.Dense(self.channels, name=f"conv_{i}")(patches_3x3(x))
      x = nn.relu(nn.LayerNorm(name=f"norm_{i}")(x))
      x = max_pool_2x2(x)
    return embedding_head(self, x, train)


class Siamese(nn.Module):
  """One encoder applied to both images of a pair; outputs their distance.

  Attributes:
    encoder: maps float[N, ...] images to float[N, D] embeddings; called as
      `encoder(x, train=...)`. Its parameters live under "encoder".
    fuse_branches: embed both images in one (2B, ...) pass (the default and
      the faster); False applies the encoder twice, for comparison.
  """

  encoder: nn.Module
  fuse_branches: bool = True

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
      return euclidean_distance(self.encoder(x1, train=train), self.encoder(x2, train=train))
    b = x1.shape[0]
    e = self.encoder(jnp.concatenate([x1, x2], axis=0), train=train)
    return euclidean_distance(e[:b], e[b:])

  def embed(self, x: jax.Array) -> jax.Array:
    """float[B, ...] images -> float[B, D] embeddings, no dropout."""
    return self.encoder(x, train=False)


def builtin_encoder(config) -> nn.Module:
  """The encoder a `Config` names: "mlp" (the original's), "cnn" or "conv4"."""
  rng = config.dropout_rng
  if config.encoder == "mlp":
    return MLP(tuple(config.hidden_sizes), config.dropout, config.final_relu, rng)
  if config.encoder == "cnn":
    return CNN(
      embed_dim=config.hidden_sizes[-1],
      dropout=config.dropout,
      final_relu=config.final_relu,
      dropout_rng=rng,
    )
  if config.encoder == "conv4":
    # hidden_sizes: (embedding,) or (channels, embedding).
    return Conv4(
      channels=config.hidden_sizes[0] if len(config.hidden_sizes) > 1 else 64,
      embed_dim=config.hidden_sizes[-1],
      dropout=config.dropout,
      final_relu=config.final_relu,
      dropout_rng=rng,
    )
  name = config.encoder
  raise ValueError(f"Unknown encoder {name!r}; built in are {', '.join(ENCODERS)}.")
