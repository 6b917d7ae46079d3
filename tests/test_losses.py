"""Distance, contrastive loss and accuracy against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import contrastive_loss, euclidean_distance, pair_accuracy


def test_distance_hand_values():
  a = jnp.array([[0.0, 0.0], [1.0, 2.0], [3.0, 3.0]])
  b = jnp.array([[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]])
  d = euclidean_distance(a, b)
  # 5; identical rows clamp to sqrt(1e-7); 1.
  np.testing.assert_allclose(d, [5.0, np.sqrt(1e-7), 1.0], rtol=1e-6)


def test_loss_hand_values():
  d = jnp.array([0.5, 0.25, 2.0, 0.0])
  y = jnp.array([1.0, 0.0, 0.0, 1.0])
  # Positive: d^2; negative: max(1 - d, 0)^2.
  expected = (0.25 + 0.75**2 + 0.0 + 0.0) / 4
  np.testing.assert_allclose(contrastive_loss(d, y, 1.0), expected, rtol=1e-6)
  # A margin of 3 makes the far negative cost (3 - 2)^2 = 1.
  expected3 = (0.25 + 2.75**2 + 1.0 + 0.0) / 4
  np.testing.assert_allclose(contrastive_loss(d, y, 3.0), expected3, rtol=1e-6)


def test_accuracy_hand_values():
  d = jnp.array([0.1, 0.6, 0.4, 0.9])
  y = jnp.array([1.0, 1.0, 0.0, 0.0])
  assert float(pair_accuracy(d, y)) == 0.5  # right, wrong, wrong, right
  assert float(pair_accuracy(d, y, threshold=0.3)) == 0.75


def test_gradient_finite_for_equal_inputs():
  a = jnp.ones((4, 8))

  def f(x, y):
    return contrastive_loss(euclidean_distance(x, y), jnp.array([1.0, 0.0, 1.0, 0.0]))

  ga, gb = jax.grad(f, argnums=(0, 1))(a, a)
  assert np.isfinite(ga).all() and np.isfinite(gb).all()


def test_distance_is_symmetric():
  k1, k2 = jax.random.split(jax.random.key(0))
  a, b = jax.random.normal(k1, (16, 5)), jax.random.normal(k2, (16, 5))
  np.testing.assert_array_equal(euclidean_distance(a, b), euclidean_distance(b, a))


def test_shapes_that_would_broadcast_are_refused():
  d = jnp.ones((4, 1))
  y = jnp.ones((4,))
  with pytest.raises(ValueError, match="same"):
    contrastive_loss(d, y)
  with pytest.raises(ValueError, match="same"):
    pair_accuracy(d, y)
  with pytest.raises(ValueError, match="(B, D)"):
    euclidean_distance(jnp.ones((4, 3)), jnp.ones((4, 2)))
