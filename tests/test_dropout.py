"""The counter-based dropout masks: rate, independence, determinism."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import Config, create_train_state, train_step
from siamese_jax.models.dropout import HashDropout, dropout_layer, fmix32, keep_mask

B, D = 256, 128  # a fused batch of 2 x 128 images, a hidden layer's width


class TwoLayers(nn.Module):
  """Two dropout layers in a row, as in the MLP; returns both masks."""

  @nn.compact
  def __call__(self, x):
    m1 = HashDropout(0.1)(x, deterministic=False) != 0
    m2 = HashDropout(0.1)(x, deterministic=False) != 0
    return m1, m2


def masks(key, step=0):
  """The step's two layer masks, keyed as `train_step` keys dropout."""
  rngs = {"dropout": jax.random.fold_in(key, step)}
  return TwoLayers().apply({}, jnp.ones((B, D)), rngs=rngs)


def corr(a, b):
  return float(np.corrcoef(np.ravel(a).astype(float), np.ravel(b).astype(float))[0, 1])


def test_keep_rate_is_0_9_within_binomial_tolerance():
  kept = np.concatenate([np.ravel(m) for s in range(8) for m in masks(jax.random.key(0), s)])
  n, p = kept.size, 0.9
  assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / n), kept.mean()
  # And for another rate, straight from keep_mask.
  m = np.asarray(keep_mask(jnp.uint32(7), (1000, 100), 0.5))
  assert abs(m.mean() - 0.5) < 5 * np.sqrt(0.25 / m.size)


def test_masks_are_uncorrelated_across_images_layers_and_steps():
  limit = 5 / np.sqrt(B // 2 * D)  # five standard errors of a null correlation
  key = jax.random.key(1)
  m1, m2 = masks(key, 0)
  n1, _ = masks(key, 1)
  first, second = np.asarray(m1[: B // 2]), np.asarray(m1[B // 2 :])
  assert abs(corr(first, second)) < limit  # the two images of each pair
  assert abs(corr(m1, m2)) < limit  # the two layers
  assert abs(corr(m1, n1)) < limit  # consecutive steps
  # Neighbouring elements (the counter's neighbours) are not correlated either.
  assert abs(corr(np.asarray(m1)[:, :-1], np.asarray(m1)[:, 1:])) < limit


def test_same_key_same_masks_other_key_other_masks():
  a1, a2 = masks(jax.random.key(2), 5)
  b1, b2 = masks(jax.random.key(2), 5)
  c1, _ = masks(jax.random.key(3), 5)
  np.testing.assert_array_equal(a1, b1)
  np.testing.assert_array_equal(a2, b2)
  assert (np.asarray(a1) != np.asarray(c1)).mean() > 0.1  # ~ 2 * 0.9 * 0.1


def test_the_seed_reaches_every_bit():
  # fmix32 is a bijection with avalanche: flipping one input bit flips about
  # half of the output bits, so neighbouring seeds give unrelated masks.
  x = jnp.arange(4096, dtype=jnp.uint32)
  flips = np.unpackbits(np.asarray(fmix32(x) ^ fmix32(x ^ jnp.uint32(1))).view(np.uint8))
  assert 0.45 < flips.mean() < 0.55
  a = np.asarray(keep_mask(jnp.uint32(10), (B, D), 0.1))
  b = np.asarray(keep_mask(jnp.uint32(11), (B, D), 0.1))
  assert abs(corr(a, b)) < 5 / np.sqrt(a.size)


def test_scaling_and_deterministic_mode():
  x = jnp.full((64, 32), 2.0)
  y = HashDropout(0.25).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  assert set(np.unique(np.asarray(y))) <= {0.0, np.float32(2.0 / 0.75)}
  np.testing.assert_array_equal(HashDropout(0.25).apply({}, x, deterministic=True), x)


def test_threefry_is_flaxs_own_dropout_and_unknown_names_are_refused():
  assert type(dropout_layer(0.1, "threefry")) is nn.Dropout
  with pytest.raises(ValueError, match="Unknown dropout rng"):
    dropout_layer(0.1, "philox")


@pytest.mark.slow
@pytest.mark.parametrize("rng", ["hash", "threefry"])
def test_train_step_masks_are_a_function_of_key_and_step(rng):
  config = Config(batch_size=16, dropout_rng=rng)
  x = np.random.default_rng(0).random((16, 28, 28), dtype=np.float32)
  batch = {"x1": x, "x2": x[::-1], "y": np.ones(16, np.float32)}  # loss d^2 > 0

  def two_steps(key):
    state = create_train_state(jax.random.key(0), config)
    out = []
    for _ in range(2):
      state, m = train_step(state, batch, key)
      out.append(float(m["loss"]))
    return out

  a, b = two_steps(jax.random.key(5)), two_steps(jax.random.key(5))
  assert a == b
  assert two_steps(jax.random.key(6)) != a
