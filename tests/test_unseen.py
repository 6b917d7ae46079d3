"""Training on some classes and testing on the others (--train-classes)."""

import jax
import numpy as np
import pytest

from siamese_jax import Config, ConfigError, train_and_evaluate
from siamese_jax.sampling.pairs import make_pairs, make_pairs_within
from siamese_jax.sampling.splits import make_pair_sets, run_keys

from conftest import run_module, write_mnist_dir

METRICS = ("accuracy", "roc_auc", "accuracy_at_threshold", "precision_at_1", "map_at_r")


def test_pairs_within_all_classes_are_the_originals(small_mnist):
  key = jax.random.key(0)
  a = make_pairs(key, small_mnist.test_labels)
  b = make_pairs_within(key, small_mnist.test_labels)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def test_pairs_within_a_group_stay_in_it(small_mnist):
  labels = small_mnist.test_labels
  pairs, y = make_pairs_within(jax.random.key(1), labels, [2, 5, 7])
  cls = labels[pairs]
  assert np.isin(cls, [2, 5, 7]).all()
  np.testing.assert_array_equal(cls[:, 0] == cls[:, 1], y == 1)
  assert y[::2].all() and not y[1::2].any()


@pytest.mark.parametrize("holdout", [0, 60])
def test_training_split_and_holdout_keep_only_the_training_classes(small_mnist, holdout):
  sets = make_pair_sets(run_keys(0), small_mnist, holdout, train_classes=(1, 4, 8))
  for split in (sets.train, sets.val) if holdout else (sets.train,):
    np.testing.assert_array_equal(split.classes, [1, 4, 8])
    assert set(np.unique(split.labels)) == {0, 1, 2}
    assert np.isin(split.classes[split.labels], [1, 4, 8]).all()
  n = int(np.isin(small_mnist.train_labels, [1, 4, 8]).sum())
  assert len(sets.train.images) + (holdout or 0) == n
  # The test split keeps every class.
  assert len(sets.test.images) == len(small_mnist.test_images)


@pytest.mark.slow
def test_fresh_pairs_come_from_the_training_classes_only(tmp_path, small_mnist):
  config = Config(epochs=1, batch_size=32, pairs="fresh", train_classes=(0, 3))
  sets = make_pair_sets(run_keys(0), small_mnist, 0, config.train_classes)
  results = train_and_evaluate(config, tmp_path / "run", small_mnist, plots=False)
  assert results["num_pairs_per_epoch"] == sets.fresh_pairs
  assert sets.fresh_pairs == len(sets.train.pairs)  # the original's count, 2 classes
  assert sets.fresh_pairs < 600 // 10 * 2 * 2


@pytest.mark.slow
def test_seen_and_unseen_metrics_are_reported(tmp_path, small_mnist):
  config = Config(epochs=2, batch_size=32, train_classes=(0, 1, 2, 3, 4))
  r = train_and_evaluate(config, tmp_path / "run", small_mnist, plots=False)
  for group in ("seen", "unseen"):
    for m in METRICS:
      assert 0 <= r[f"test_{group}_{m}"] <= 1, (group, m)
  assert r["test_seen_classes"] == [0, 1, 2, 3, 4] and r["test_unseen_classes"] == [5, 6, 7, 8, 9]
  assert r["test_seen_images"] + r["test_unseen_images"] == 200
  # The seen group's accuracy is the pair accuracy of its own pairs, by hand.
  from siamese_jax import load_trained

  model = load_trained(tmp_path / "run")
  labels = small_mnist.test_labels
  idx = np.flatnonzero(labels < 5)
  key = jax.random.fold_in(run_keys(0).pairs, 4)
  pairs, y = make_pairs_within(key, labels[idx])
  x = small_mnist.test_images[idx]
  d = model.distance(x[pairs[:, 0]], x[pairs[:, 1]])
  assert r["test_seen_accuracy"] == pytest.approx(np.mean((d < 0.5) == y), abs=1e-6)
  assert r["test_seen_pairs"] == len(y)


@pytest.mark.slow
def test_the_default_run_has_no_groups(tmp_path, small_mnist):
  r = train_and_evaluate(Config(epochs=1, batch_size=32), tmp_path / "run", small_mnist)
  assert not any(k.startswith(("test_seen", "test_unseen")) for k in r)
  assert 0 <= r["test_precision_at_1"] <= 1 and r["test_retrieval_skipped_queries"] == 0


@pytest.mark.slow
def test_bad_train_classes(tmp_path, small_mnist):
  with pytest.raises(ConfigError, match="at least 2 different class ids"):
    Config(train_classes=(3, 3))
  assert Config(train_classes=[4, 1]).train_classes == (1, 4)
  with pytest.raises(ConfigError, match=r"class\(es\) \[12\] have no training images"):
    make_pair_sets(run_keys(0), small_mnist, 0, (1, 12))
  d = write_mnist_dir(tmp_path / "m", small_mnist)
  r = run_module(
    "experiments.mnist_siamese", "--data-dir", d, "--train-classes", "1,12",
    "--workdir", str(tmp_path / "run"),
  )  # fmt: skip
  assert r.returncode == 2 and "--train-classes" in r.stderr and "Traceback" not in r.stderr
  assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
