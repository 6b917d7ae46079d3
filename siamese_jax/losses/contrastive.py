"""The pair loss of the Keras original and DrLIM, and its accuracy: functions of (d, y).

`d` float[B] distances and `y` float[B] labels (1.0 = same; DrLIM writes Y
= 0 for similar). Shapes are checked at trace time: a (B, 1) meeting a (B,)
would broadcast into a (B, B) loss that trains silently on the wrong thing.
"""

import jax
import jax.numpy as jnp


def _check_pair_args(d: jax.Array, y: jax.Array, fn: str) -> None:
  if d.ndim != 1 or d.shape != y.shape:
    raise ValueError(f"{fn} needs d and y of the same (B,) shape, got {d.shape} and {y.shape}.")


def contrastive_loss(d: jax.Array, y: jax.Array, margin: float = 1.0) -> jax.Array:
  """float[]: mean(y * d^2 + (1 - y) * max(margin - d, 0)^2)."""
  _check_pair_args(d, y, "contrastive_loss")
  return jnp.mean(y * jnp.square(d) + (1.0 - y) * jnp.square(jnp.maximum(margin - d, 0.0)))


def pair_accuracy(d: jax.Array, y: jax.Array, threshold: float = 0.5) -> jax.Array:
  """float[]: mean((d < threshold) == y), the original's `compute_accuracy`."""
  _check_pair_args(d, y, "pair_accuracy")
  return jnp.mean((d < threshold).astype(jnp.float32) == y)
