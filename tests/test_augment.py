"""The affine augmentation: identity at zero strength, keyed, and geometrically right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax.core.config import Config
from siamese_jax.data.augment import affine_matrices, augment, warp
from siamese_jax.training import create_train_state, train_step


def _images(n=8, size=28, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size))


def test_zero_strength_is_the_identity_bitwise():
  x = _images()
  np.testing.assert_array_equal(augment(jax.random.key(1), x, 0.0), x)
  linear, shift = affine_matrices(jax.random.key(1), 8, 0.0)
  np.testing.assert_array_equal(linear, np.broadcast_to(np.eye(2), (8, 2, 2)))
  np.testing.assert_array_equal(shift, 0)


def test_same_key_same_images_other_key_other_images():
  x = _images()
  a = augment(jax.random.key(2), x, 1.0)
  np.testing.assert_array_equal(a, augment(jax.random.key(2), x, 1.0))
  b = augment(jax.random.key(3), x, 1.0)
  assert not np.array_equal(a, b)
  assert not np.array_equal(a, x)


def test_ranges_follow_koch_and_each_part_is_on_half_the_time():
  linear, shift = affine_matrices(jax.random.key(0), 20000, 1.0)
  linear, shift = np.asarray(linear), np.asarray(shift)
  assert np.abs(shift).max() <= 2 / 105 + 1e-7
  assert 0.45 < np.mean(shift[:, 0] != 0) < 0.55
  det = np.linalg.det(linear)  # |rotation| = 1, shear 1 - rx*ry, scales 0.8..1.2
  assert det.min() > 0.8 * 0.8 * (1 - 0.09) - 1e-5 and det.max() < 1.2 * 1.2 * 1.09 + 1e-5
  half = np.asarray(affine_matrices(jax.random.key(0), 20000, 0.5)[1])
  assert np.abs(half).max() <= 1 / 105 + 1e-7


def test_warp_moves_pixels_where_the_transform_says():
  x = jnp.zeros((1, 9, 9)).at[0, 4, 4].set(1.0)
  # Output (r, c) reads input (r + 1, c): the dot moves up one row.
  up = warp(x, jnp.eye(2)[None], jnp.array([[1 / 9, 0.0]]))
  assert float(up[0, 3, 4]) == 1.0 and float(up.sum()) == 1.0
  # A quarter turn about the centre maps the dot at (4, 6) to (2, 4) or (6, 4).
  y = jnp.zeros((1, 9, 9)).at[0, 4, 6].set(1.0)
  quarter = jnp.array([[[0.0, -1.0], [1.0, 0.0]]])
  turned = np.asarray(warp(y, quarter, jnp.zeros((1, 2))))[0]
  assert abs(turned.sum() - 1.0) < 1e-5 and max(turned[2, 4], turned[6, 4]) > 0.999


@pytest.mark.slow
def test_the_step_augments_by_step_and_reproducibly():
  config = Config(encoder="conv4", hidden_sizes=(16,), augment="affine", final_relu=False)
  plain = Config(encoder="conv4", hidden_sizes=(16,), final_relu=False)
  x = _images(4)
  batch = {"x1": x, "x2": x[::-1], "y": jnp.array([1.0, 0.0, 1.0, 0.0])}
  key = jax.random.key(9)

  def run(c):
    state = create_train_state(jax.random.key(0), c, image_shape=(28, 28))
    out = []
    for _ in range(2):
      state, m = train_step(state, batch, key)
      out.append(float(m["loss"]))
    return out, state

  a, sa = run(config)
  b, sb = run(config)
  assert a == b  # same keys, same distortions, same training
  c, _ = run(plain)
  assert a != c  # the distortion changes what the step sees
  assert sa.augment_strength == 1.0
  jax.tree.map(np.testing.assert_array_equal, sa.params, sb.params)
