"""Dropout whose mask bits come from a cheap counter-based hash.

Flax's `nn.Dropout` runs threefry2x32 (20 rounds over two words) per
element, most of this network's non-matmul work; the hash costs a small
fraction of it (docs/performance.md). `Dropout(rate, rng="hash")` draws one
32-bit seed per layer and step from the "dropout" rng (so masks stay a
pure function of (key, step)) and sets element i's bits to

    h = fmix32(i * 0x9E3779B9 + fmix32(seed))

SplitMix's construction (Steele, Lea & Flood 2014): a Weyl sequence through
MurmurHash3's bijective `fmix32` finalizer. Dropout needs each element
kept with probability 1 - rate independently of its neighbours, the other
layer, the pair's other image and the next step, not cryptographic
strength; the keep rate is exact to 2^-32 and the tests check those
correlations. `rng="threefry"` (`--dropout-rng threefry`) keeps flax's.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax.core.config import DROPOUT_RNGS

_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: the Weyl increment


def fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer: a bijection of uint32 with full avalanche."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def hash_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32[shape]: the hash of each element's flat index under the uint32[] `seed`."""
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  return fmix32(index * jnp.uint32(_GOLDEN) + fmix32(seed))


def keep_mask(seed: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
  """bool[shape]: True where the element is kept, with probability 1 - rate."""
  threshold = min(round(rate * 2.0**32), 2**32 - 1)
  return hash_bits(seed, shape) >= jnp.uint32(threshold)


class HashDropout(nn.Module):
  """Inverted dropout with hashed mask bits, on `nn.Dropout`'s contract."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
    keep = keep_mask(seed, x.shape, self.rate)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


def dropout_layer(rate: float, rng: str) -> nn.Module:
  """`HashDropout(rate)` for "hash", flax's `nn.Dropout(rate)` for "threefry"."""
  if rng == "hash":
    return HashDropout(rate)
  if rng == "threefry":
    return nn.Dropout(rate)
  raise ValueError(f"Unknown dropout rng {rng!r}; choose one of {', '.join(DROPOUT_RNGS)}.")
