"""The epoch's shuffle: `epoch_batches` cuts `permutation`, a random permutation that
XLA computes in a few single-array sorts, into the epoch's batches.

`jax.random.permutation` sorts random 32-bit keys carrying the indices as
values, in two rounds for 108,400 training pairs. XLA's CPU sort of such
key/value pairs is several times slower than a sort of a single uint32
array of the same length (docs/performance.md).

So each round here packs both into one uint32: the high 32 - b bits are
random, the low b bits hold the element's current position (b bits count
to n). Sorting the packed words orders the elements by their random bits,
ties kept in their current order, and reading the low bits back gives the
new order. After k rounds the elements are ordered by the concatenation of
their k random keys, the last round's first, ties by original index: that
is a uniformly random permutation unless two elements tie on all k(32 - b)
bits. Rounds are added until the expected number of tied pairs, about
n^2 / 2^(k(32 - b) + 1), is below 2^-11 (3 rounds, 45 bits, for 108,400
elements; `jax.random.permutation`'s rule asks for 3 log2(n) bits).
Sizes that leave fewer than 8 random bits a round (n > 2^24) use
`jax.random.permutation`.
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
  """int32[n]: a random permutation of 0..n-1, a pure function of `key`.

  Args:
    key: a JAX PRNG key.
    n: how many elements (static).
  """
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
  """Whole batches of `batch_size` in `num_pairs` pairs (the rest sit out that epoch).

  Raises:
    ConfigError: not one whole batch.
  """
  steps = num_pairs // batch_size
  if steps == 0:
    raise ConfigError(
      f"batch_size={batch_size} is larger than the {num_pairs} training pairs; "
      "use --batch-size of at most that."
    )
  return steps


def epoch_batches(key: jax.Array, num_pairs: int, batch_size: int) -> jax.Array:
  """A fresh permutation of the pairs, cut into full batches.

  The last `num_pairs % batch_size` pairs of each permutation are left out,
  so every step has the same shape and compiles once; a new permutation every
  epoch means no pair is left out systematically.

  Returns:
    int32[num_pairs // batch_size, batch_size].
  """
  steps = steps_per_epoch(num_pairs, batch_size)
  perm = permutation(key, num_pairs)  # cheaper than jax.random.permutation on CPU
  return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)
