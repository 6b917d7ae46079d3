"""`Conv4`: the few-shot literature's four-block backbone, for characters (`--encoder conv4`)."""

import flax.linen as nn
import jax

from siamese_jax.models.layers import embedding_head, max_pool_2x2, patches_3x3


class Conv4(nn.Module):
  """Four blocks of 3x3 convolution, LayerNorm, ReLU and 2x2 max-pooling, then Dense.

  The few-shot backbone (Vinyals et al. 2016; Snell et al. 2017): 28x28 -> 14
  -> 7 -> 3 -> 1. LayerNorm over channels (or over each image's whole map,
  `norm_over="image"`) stands in for BatchNorm: no running statistics, so
  the step stays a pure function of (params, batch, key).
  Convolutions are im2col and one Dense, as in `CNN`. `channels` is one width
  for every block, or one per block: the first block's maps are the largest
  (28x28), so its width sets most of a step's memory traffic
  (docs/losses.md, "The conv4 step, stage by stage").
  """

  channels: int | tuple[int, int, int, int] = 64
  embed_dim: int = 128
  dropout: float = 0.0
  final_relu: bool = False
  dropout_rng: str = "hash"
  # "image": each LayerNorm over an image's whole map, not each pixel's channels.
  norm_over: str = "channels"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[B, H, W] images in [0, 1] -> float[B, embed_dim] embeddings."""
    if x.ndim == 3:
      x = x[..., None]
    widths = self.channels if isinstance(self.channels, tuple) else (self.channels,) * 4
    for i, width in enumerate(widths):
      x = nn.Dense(width, name=f"conv_{i}")(patches_3x3(x))
      axes = (1, 2, 3) if self.norm_over == "image" else -1
      x = nn.relu(nn.LayerNorm(reduction_axes=axes, name=f"norm_{i}")(x))
      x = max_pool_2x2(x)
    return embedding_head(self, x, train)


def from_config(config) -> Conv4:
  """`--encoder conv4`: `hidden_sizes` is (embedding,), (channels, embedding) or
  (block 0's channels, ..., block 3's, embedding)."""
  *widths, _ = config.hidden_sizes
  return Conv4(
    channels=tuple(widths) if len(widths) == 4 else (widths[0] if widths else 64),
    embed_dim=config.hidden_sizes[-1],
    dropout=config.dropout,
    final_relu=config.final_relu,
    dropout_rng=config.dropout_rng,
    norm_over=config.norm_over,
  )
