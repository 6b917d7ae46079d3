"""Dropout whose mask bits come from a cheap counter-based hash.

Flax's `nn.Dropout` draws its mask with `jax.random.bernoulli`: a full
threefry2x32 evaluation (20 rounds over two 32-bit words) for every element.
For this network that is most of a step's non-matmul work; the hash below
costs a small fraction of it (measured in docs/performance.md).

`Dropout(rate, rng="hash")` (the default here) draws one 32-bit seed per
layer and step from the step's JAX key (`jax.random.bits` on the module's
"dropout" rng, so the masks stay a pure function of (key, step), exactly
like flax's), and derives the bit of element i as

    h = fmix32(i * 0x9E3779B9 + fmix32(seed))

The construction is SplitMix's (Steele, Lea & Flood 2014, "Fast Splittable
Pseudorandom Number Generators", OOPSLA): a Weyl sequence (the counter
times the golden-ratio constant) passed through a bijective avalanche
finalizer, here MurmurHash3's 32-bit `fmix32` (Appleby), in which every
input bit flips each output bit with probability close to 1/2. The seed
goes through `fmix32` first, so neighbouring seeds give unrelated streams.
Why that is enough for dropout: a mask needs each element kept with
probability 1 - rate, independently of its neighbours, of the other layer,
of the other image of the pair and of the next step. The keep rate is
exact to 2^-32, and the tests check the rate and the absence of those
correlations. Dropout needs no cryptographic strength, nor the 2^64-long
streams of a simulation PRNG: a layer's mask has 32,768 elements a step.

`rng="threefry"` keeps flax's own `nn.Dropout` (JAX's standard PRNG), for
anyone who needs it: `--dropout-rng threefry`.
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
  """uint32[shape]: the hash of each element's flat index under `seed`.

  Args:
    seed: uint32[] per-layer, per-step seed.
    shape: the mask's shape.
  """
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  return fmix32(index * jnp.uint32(_GOLDEN) + fmix32(seed))


def keep_mask(seed: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
  """bool[shape]: True where the element is kept, with probability 1 - rate."""
  threshold = min(round(rate * 2.0**32), 2**32 - 1)
  return hash_bits(seed, shape) >= jnp.uint32(threshold)


class HashDropout(nn.Module):
  """Inverted dropout (kept values scaled by 1 / (1 - rate)) with hashed mask bits.

  The same contract as `nn.Dropout`: `deterministic=True` is the identity,
  and the mask comes from the module's "dropout" rng.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
    keep = keep_mask(seed, x.shape, self.rate)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


def dropout_layer(rate: float, rng: str) -> nn.Module:
  """`HashDropout(rate)` for rng="hash", flax's own `nn.Dropout(rate)` for "threefry".

  Called inside a compact module, so either is named and keyed as flax
  names and keys any submodule; "threefry" is exactly what the project used
  before the hash (same module path, same keys, same masks).
  """
  if rng == "hash":
    return HashDropout(rate)
  if rng == "threefry":
    return nn.Dropout(rate)
  raise ValueError(f"Unknown dropout rng {rng!r}; choose one of {', '.join(DROPOUT_RNGS)}.")
