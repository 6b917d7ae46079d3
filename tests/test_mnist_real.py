"""On the real MNIST files (skipped, with the reason, when not given)."""

import jax
import numpy as np

from siamese_jax import Config, train_and_evaluate


def test_real_mnist_shapes(real_mnist):
  assert real_mnist.train_images.shape == (60000, 28, 28)
  assert real_mnist.test_images.shape == (10000, 28, 28)
  counts = np.bincount(real_mnist.train_labels, minlength=10)
  np.testing.assert_array_equal(
    counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  )


def test_short_run_beats_95_percent(tmp_path, real_mnist):
  results = train_and_evaluate(Config(epochs=3), tmp_path / "run", real_mnist)
  assert results["num_train_pairs"] == 108_400 and results["num_test_pairs"] == 17_820
  assert results["test_accuracy"] > 0.95, results
  assert jax.default_backend() == results["backend"]
