"""Pair generation: the original's create_pairs, and fresh balanced pairs."""

import json

import jax
import numpy as np
import pytest

from siamese_jax import Config, DataError, make_pairs, sample_pairs, train_and_evaluate
from siamese_jax.sampling.splits import make_pair_sets, run_keys


def labels_with_counts(counts, seed=0):
  labels = np.concatenate([np.full(c, d) for d, c in enumerate(counts)])
  np.random.default_rng(seed).shuffle(labels)
  return labels.astype(np.uint8)


COUNTS = [7, 5, 9, 6, 8, 5, 7, 10, 6, 4]  # smallest 4 -> n = 3


def test_counts_and_dtypes():
  pairs, y = make_pairs(jax.random.key(0), labels_with_counts(COUNTS))
  n = min(COUNTS) - 1
  assert pairs.shape == (2 * 10 * n, 2) and pairs.dtype == np.int32
  assert y.shape == (2 * 10 * n,) and y.dtype == np.float32


def test_labels_alternate_one_zero():
  _, y = make_pairs(jax.random.key(0), labels_with_counts(COUNTS))
  np.testing.assert_array_equal(y, np.tile([1.0, 0.0], len(y) // 2))


def test_positives_share_digit_negatives_do_not():
  labels = labels_with_counts(COUNTS)
  pairs, y = make_pairs(jax.random.key(3), labels)
  same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
  np.testing.assert_array_equal(same, y == 1.0)
  assert (pairs[:, 0] != pairs[:, 1]).all()


def test_follows_create_pairs_order():
  """Positive i pairs the i-th and (i+1)-th example of its digit, in split order."""
  labels = labels_with_counts(COUNTS)
  pairs, _ = make_pairs(jax.random.key(0), labels)
  n = min(COUNTS) - 1
  for d in range(10):
    of_d = np.flatnonzero(labels == d)
    for i in range(n):
      row = 2 * (d * n + i)
      assert tuple(pairs[row]) == (of_d[i], of_d[i + 1])
      neg_first, neg_second = pairs[row + 1]
      assert neg_first == of_d[i]
      other = labels[neg_second]
      assert neg_second == np.flatnonzero(labels == other)[i]


def test_same_key_same_pairs_other_key_other_pairs():
  labels = labels_with_counts(COUNTS)
  a, _ = make_pairs(jax.random.key(1), labels)
  b, _ = make_pairs(jax.random.key(1), labels)
  c, _ = make_pairs(jax.random.key(2), labels)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_class_with_one_example_is_a_clear_error():
  counts = list(COUNTS)
  counts[6] = 1
  with pytest.raises(DataError, match=r"class\(es\) \[6\]"):
    make_pairs(jax.random.key(0), labels_with_counts(counts))


def test_real_mnist_pair_counts(real_mnist):
  train, _ = make_pairs(jax.random.key(0), real_mnist.train_labels)
  test, _ = make_pairs(jax.random.key(1), real_mnist.test_labels)
  assert len(train) == 108_400
  assert len(test) == 17_820


def test_sample_pairs_balanced_and_correct():
  labels = labels_with_counts(COUNTS)
  pairs, y = sample_pairs(jax.random.key(0), labels, 1001)
  pairs, y = np.asarray(pairs), np.asarray(y)
  assert pairs.shape == (1001, 2) and y.shape == (1001,)
  np.testing.assert_array_equal(y, (np.arange(1001) % 2 == 0).astype(np.float32))
  same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
  np.testing.assert_array_equal(same, y == 1.0)
  assert (pairs[:, 0] != pairs[:, 1]).all()  # A positive is never the anchor itself.
  # Every digit anchors some pairs, and fresh keys give fresh pairs.
  assert set(labels[pairs[:, 0]]) == set(range(10))
  other, _ = sample_pairs(jax.random.key(1), labels, 1001)
  assert not np.array_equal(pairs, np.asarray(other))


def test_holdout_is_disjoint_from_training_images(small_mnist):
  sets = make_pair_sets(run_keys(0), small_mnist, holdout=150)
  assert len(sets.val.images) == 150 and len(sets.train.images) == 450
  # Every training image is one of the split's, and no validation image is among them.
  as_rows = {img.tobytes(): i for i, img in enumerate(small_mnist.train_images)}
  train_ids = {as_rows[img.tobytes()] for img in sets.train.images}
  val_ids = {as_rows[img.tobytes()] for img in sets.val.images}
  assert not train_ids & val_ids and len(train_ids | val_ids) == 600
  same = sets.val.labels[sets.val.pairs[:, 0]] == sets.val.labels[sets.val.pairs[:, 1]]
  np.testing.assert_array_equal(same, sets.val.y == 1)


@pytest.mark.slow
def test_fresh_pairs_mode_trains_on_new_pairs(tmp_path, small_mnist):
  fixed = train_and_evaluate(Config(epochs=2, batch_size=16), tmp_path / "a", small_mnist)
  fresh = train_and_evaluate(
    Config(epochs=2, batch_size=16, pairs="fresh"), tmp_path / "b", small_mnist
  )
  assert fresh["pairs"] == "fresh" and fresh["num_train_pairs"] == fixed["num_train_pairs"]
  assert fresh["num_pairs_per_epoch"] == fixed["num_pairs_per_epoch"] == 10 * 59 * 2
  a = [json.loads(x) for x in open(tmp_path / "a/metrics.jsonl")]
  b = [json.loads(x) for x in open(tmp_path / "b/metrics.jsonl")]
  assert a[0]["train_loss"] != b[0]["train_loss"]
  # Reproducible: the same seed gives the same fresh pairs.
  again = train_and_evaluate(
    Config(epochs=2, batch_size=16, pairs="fresh"), tmp_path / "c", small_mnist
  )
  assert (
    again["test_accuracy"] == fresh["test_accuracy"] and again["threshold"] == fresh["threshold"]
  )


@pytest.mark.slow
def test_fresh_pairs_per_epoch_are_the_originals_count_even_with_a_holdout(tmp_path, small_mnist):
  r = train_and_evaluate(
    Config(epochs=1, batch_size=16, pairs="fresh", holdout=150), tmp_path / "w", small_mnist
  )
  assert r["num_pairs_per_epoch"] == 10 * 59 * 2  # as on all 600 training images
  assert r["num_train_pairs"] < r["num_pairs_per_epoch"]  # fixed pairs of the 450 left
