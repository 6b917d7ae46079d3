"""The shared MLP: parameter count, one parameter tree, symmetry."""

import jax
import numpy as np

from siamese_jax import Config, create_train_state


def test_parameter_count_is_the_originals():
  state = create_train_state(jax.random.key(0), Config())
  # 784*128+128 + 128*128+128 + 128*128+128
  assert sum(p.size for p in jax.tree.leaves(state.params)) == 133_504


def test_one_parameter_tree_serves_both_inputs():
  state = create_train_state(jax.random.key(0), Config())
  assert list(state.params) == ["encoder"]
  assert sorted(state.params["encoder"]) == ["Dense_0", "Dense_1", "Dense_2"]


def test_distance_is_symmetric_and_zero_for_same_image():
  state = create_train_state(jax.random.key(0), Config())
  x = jax.random.uniform(jax.random.key(1), (8, 784))
  z = jax.random.uniform(jax.random.key(2), (8, 784))
  d_xz = state.apply_fn({"params": state.params}, x, z, train=False)
  d_zx = state.apply_fn({"params": state.params}, z, x, train=False)
  np.testing.assert_allclose(d_xz, d_zx, rtol=1e-6)
  d_xx = state.apply_fn({"params": state.params}, x, x, train=False)
  np.testing.assert_allclose(d_xx, np.sqrt(1e-7), rtol=1e-5)


def test_images_may_come_as_28x28():
  state = create_train_state(jax.random.key(0), Config())
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28))
  z = jax.random.uniform(jax.random.key(2), (4, 28, 28))
  d_img = state.apply_fn({"params": state.params}, x, z, train=False)
  d_flat = state.apply_fn({"params": state.params}, x.reshape(4, -1), z.reshape(4, -1), train=False)
  np.testing.assert_array_equal(d_img, d_flat)
