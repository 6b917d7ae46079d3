"""The pair loss of the Keras original and DrLIM, and its accuracy: functions of (d, y).

`d` is float[B] distances (`siamese_jax.losses.distances`), `y` float[B]
pair labels. Both functions take flat `(B,)` / `(B, D)` arrays and check their shapes at
trace time. A `(B, 1)` distance meeting a `(B,)` label would otherwise
broadcast into a `(B, B)` loss that trains, silently, on the wrong objective.

Label convention: y = 1.0 means "same digit" (the Keras example); the DrLIM
paper writes Y = 0 for similar pairs.
"""

import jax
import jax.numpy as jnp


def _check_pair_args(d: jax.Array, y: jax.Array, fn: str) -> None:
  if d.ndim != 1 or d.shape != y.shape:
    raise ValueError(f"{fn} needs d and y of the same (B,) shape, got {d.shape} and {y.shape}.")


def contrastive_loss(d: jax.Array, y: jax.Array, margin: float = 1.0) -> jax.Array:
  """mean(y * d^2 + (1 - y) * max(margin - d, 0)^2).

  Args:
    d: float[B] distances.
    y: float[B] labels, 1.0 = same digit.
    margin: negatives at distance >= margin cost nothing.

  Returns:
    float[] mean loss.
  """
  _check_pair_args(d, y, "contrastive_loss")
  return jnp.mean(y * jnp.square(d) + (1.0 - y) * jnp.square(jnp.maximum(margin - d, 0.0)))


def pair_accuracy(d: jax.Array, y: jax.Array, threshold: float = 0.5) -> jax.Array:
  """mean((d < threshold) == y): the original's `compute_accuracy`.

  Args:
    d: float[B] distances.
    y: float[B] labels, 1.0 = same digit.
    threshold: distances below it predict "same digit".

  Returns:
    float[] fraction of pairs classified right.
  """
  _check_pair_args(d, y, "pair_accuracy")
  return jnp.mean((d < threshold).astype(jnp.float32) == y)
