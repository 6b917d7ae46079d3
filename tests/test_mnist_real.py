"""On the real MNIST files (skipped, with the reason, when not given)."""

import numpy as np
import pytest

from siamese_jax import Config, load_trained, train_and_evaluate
from siamese_jax.sampling.splits import check_data


def test_real_mnist_shapes(real_mnist):
  assert real_mnist.train_images.shape == (60000, 28, 28)
  assert real_mnist.test_images.shape == (10000, 28, 28)
  counts = np.bincount(real_mnist.train_labels, minlength=10)
  np.testing.assert_array_equal(
    counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  )


@pytest.mark.slow
def test_short_run_beats_95_percent(tmp_path, real_mnist):
  results = train_and_evaluate(Config(epochs=3), tmp_path / "run", real_mnist)
  assert results["num_train_pairs"] == 108_400 and results["num_test_pairs"] == 17_820
  assert results["test_accuracy"] > 0.95, results
  assert results["test_precision_at_1"] > 0.9 and results["num_classes"] == 10
  # The saved model gives back the run's own test accuracy: the same test
  # pairs, distances and threshold as the final evaluation (a pair is 1/17,820).
  model = load_trained(tmp_path / "run")
  test = check_data(Config(epochs=3), real_mnist).sets.test
  d = model.distance(test.images[test.pairs[:, 0]], test.images[test.pairs[:, 1]])
  accuracy = np.mean((d < 0.5) == (test.y == 1))
  assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-4)
