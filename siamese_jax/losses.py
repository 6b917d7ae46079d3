"""The small pure math of a Siamese network: distance, loss, accuracy.

All functions take flat `(B,)` / `(B, D)` arrays and check their shapes at
trace time. A `(B, 1)` distance meeting a `(B,)` label would otherwise
broadcast into a `(B, B)` loss that trains, silently, on the wrong objective.

Label convention: y = 1.0 means "same digit" (the Keras example); the DrLIM
paper writes Y = 0 for similar pairs.
"""

import jax
import jax.numpy as jnp

# Keras' backend epsilon: the original clamps the squared distance to it so
# that sqrt never sees 0, where its gradient is infinite.
DISTANCE_EPS = 1e-7


def euclidean_distance(a: jax.Array, b: jax.Array, eps: float = DISTANCE_EPS) -> jax.Array:
  """sqrt(max(||a - b||^2, eps)) per row.

  The clamp keeps the gradient finite when a == b (identical images, or a
  pair of an image with itself): `max` then passes no gradient to the sum.

  Args:
    a: float[B, D] embeddings.
    b: float[B, D] embeddings.
    eps: floor on the squared distance.

  Returns:
    float[B] distances, each >= sqrt(eps).
  """
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"euclidean_distance needs two (B, D) arrays, got {a.shape} and {b.shape}.")
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(a - b), axis=-1), eps))


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
