"""The epoch's shuffle: `permutation`, cut into batches by `epoch_batches`.

`jax.random.permutation` sorts key/value pairs, several times slower on
XLA's CPU than sorting one uint32 array (docs/performance.md). So each
round packs random high bits and the element's position (low b bits) into
one uint32 and sorts that. After k rounds the order is by the rounds'
random keys, ties by index: uniform unless two elements tie on all k(32 -
b) bits. Rounds are added until the expected tied pairs, about n^2 /
2^(k(32 - b) + 1), fall below 2^-11 (3 rounds for 108,400); past n = 2^24
it falls back to `jax.random.permutation`.
"""

import math

import jax
import jax.numpy as jnp

from siamese_jax.core.errors import ConfigError


def rounds_needed(n: int) -> int:
  """Sort rounds for n elements (0: fall back to jax.random.permutation)."""
  position_bits = max(1, (n - 1).bit_length())
  random_bits = 32 - position_bits
  if random_bits < 8:
    return 0
  return max(1, math.ceil((2 * math.log2(max(n, 2)) + 10) / random_bits))


def permutation(key: jax.Array, n: int) -> jax.Array:
  """int32[n]: a random permutation of 0..n-1 (n static), a pure function of `key`."""
  rounds = rounds_needed(n)
  if rounds == 0:
    return jax.random.permutation(key, n).astype(jnp.int32)
  position_bits = max(1, (n - 1).bit_length())
  low = jnp.uint32((1 << position_bits) - 1)
  positions = jax.lax.iota(jnp.uint32, n)
  order = jax.lax.iota(jnp.int32, n)
  for round_key in jax.random.split(key, rounds):
    packed = (jax.random.bits(round_key, (n,), jnp.uint32) & ~low) | positions
    order = order[(jnp.sort(packed) & low).astype(jnp.int32)]
  return order


def steps_per_epoch(num_pairs: int, batch_size: int) -> int:
  """Whole batches in `num_pairs` rows; ConfigError if not one."""
  steps = num_pairs // batch_size
  if steps == 0:
    raise ConfigError(
      f"batch_size={batch_size} is larger than the {num_pairs} training pairs; "
      "use --batch-size of at most that."
    )
  return steps


def epoch_batches(key: jax.Array, num_pairs: int, batch_size: int) -> jax.Array:
  """int32[num_pairs // batch_size, batch_size]: a fresh permutation cut into full batches.

  The remainder sits out (every step one shape, one compilation); a new
  permutation each epoch leaves nothing out systematically.
  """
  steps = steps_per_epoch(num_pairs, batch_size)
  perm = permutation(key, num_pairs)  # cheaper than jax.random.permutation on CPU
  return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)
