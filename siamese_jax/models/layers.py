"""What the convolutional encoders share: im2col windows, pooling, the embedding head.

On XLA's CPU backend a convolution as im2col and one matmul, and pooling as
reshape and max, run far faster than the native ops and their gradients
(docs/performance.md).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.models.dropout import dropout_layer


def patches_3x3_stride2(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, ceil(H/2), ceil(W/2), 9C]: 'SAME' 3x3 stride-2 windows."""
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


def patches_3x3(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, H, W, 9 * C]: the 3x3 windows of a 'SAME' convolution."""
  h, w = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], -1)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """float[B, H, W, C] -> float[B, H // 2, W // 2, C]: max over 2x2 blocks (odd edges drop)."""
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def embedding_head(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """Flatten, dropout, Dense to `embed_dim` (the caller's `Dense_0`), ReLU if `final_relu`."""
  x = x.reshape(x.shape[0], -1)
  x = dropout_layer(module.dropout, module.dropout_rng)(x, deterministic=not train)
  x = nn.Dense(module.embed_dim, kernel_init=nn.initializers.glorot_uniform())(x)
  return nn.relu(x) if module.final_relu else x
