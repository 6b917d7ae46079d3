"""ROC AUC and the validation-chosen threshold, against hand values and brute force."""

import json
import os

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siamese_jax import Config, checkpoint, create_train_state, evaluate, train_and_evaluate
from siamese_jax.evaluation.pairs import accuracy_at, best_threshold, roc_auc
from siamese_jax.sampling.splits import make_pair_sets, run_keys

from conftest import is_png, jsonl


def brute_auc(d, y):
  pos, neg = d[y == 1], d[y == 0]
  closer = (pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return closer / (len(pos) * len(neg))


def test_auc_hand_values():
  y = np.array([1, 1, 0, 0], np.float32)
  assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0  # positives closest
  assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), y) == 0.0
  assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5  # ties count half
  # One of the four (pos, neg) orderings is wrong: 0.3 > 0.25.
  assert roc_auc(np.array([0.1, 0.3, 0.25, 0.9]), y) == 0.75


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_auc_matches_brute_force(rows):
  d = np.array([r[0] / 6 for r in rows])
  y = np.array([float(r[1]) for r in rows])
  if y.min() == y.max():
    with pytest.raises(ValueError):
      roc_auc(d, y)
    return
  assert roc_auc(d, y) == pytest.approx(brute_auc(d, y))


def test_best_threshold_hand_value():
  d = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 1.0])
  y = np.array([1, 1, 1, 0, 0, 0], np.float32)
  t, acc = best_threshold(d, y)
  assert 0.6 < t < 0.7 and t == pytest.approx(0.65)
  assert acc == 1.0 and accuracy_at(d, y, t) == 1.0
  assert accuracy_at(d, y, 0.5) == pytest.approx(5 / 6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.booleans()), min_size=1, max_size=40))
def test_best_threshold_is_best(rows):
  d = np.array([r[0] for r in rows])
  y = np.array([float(r[1]) for r in rows])
  t, acc = best_threshold(d, y)
  assert acc == pytest.approx(accuracy_at(d, y, t))
  for cand in np.concatenate([d, d + 1e-9, [-1.0, 3.0]]):
    assert accuracy_at(d, y, cand) <= acc + 1e-12


@pytest.mark.slow
def test_the_default_runs_val_figures_are_the_test_pairs(mnist_run):
  # As in the Keras original, whose validation_data is its test pairs.
  last = jsonl(os.path.join(mnist_run[0], "metrics.jsonl"))[-1]
  results = json.loads(open(os.path.join(mnist_run[0], "results.json")).read())
  assert last["val_loss"] == pytest.approx(results["test_loss"], rel=1e-6)
  assert last["val_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-7)


@pytest.mark.slow
def test_threshold_is_chosen_on_validation_never_test(tmp_path, small_mnist):
  config = Config(epochs=2, batch_size=16, holdout=150)
  r = train_and_evaluate(config, tmp_path / "w", small_mnist)
  assert r["threshold_source"] == "held-out validation pairs"
  for key in ("test_roc_auc", "val_roc_auc", "threshold", "test_accuracy_at_threshold"):
    assert key in r and np.isfinite(r[key])
  # Recompute: the threshold is the best one on the validation pairs.
  state = checkpoint.load(str(tmp_path / "w"), create_train_state(jax.random.key(0), config)).state
  sets = make_pair_sets(run_keys(0), small_mnist, holdout=150)
  _, d_val = evaluate(state, sets.val.images, sets.val.pairs, sets.val.y)
  assert r["threshold"] == best_threshold(np.asarray(d_val), sets.val.y)[0]
  # Per-epoch validation was the holdout, not the test set: the last epoch's
  # val_* are the final state's figures on the held-out pairs, and the test
  # pairs give other ones.
  last = [json.loads(x) for x in open(tmp_path / "w/metrics.jsonl")][-1]
  val_m, _ = evaluate(state, sets.val.images, sets.val.pairs, sets.val.y)
  test_m, _ = evaluate(state, sets.test.images, sets.test.pairs, sets.test.y)
  assert last["val_loss"] == pytest.approx(float(val_m["loss"]), rel=1e-6)
  assert last["val_accuracy"] == pytest.approx(float(val_m["accuracy"]), abs=1e-7)
  assert abs(float(test_m["loss"]) - float(val_m["loss"])) > 1e-6
  assert is_png(tmp_path / "w/distances.png")
  saved = json.loads((tmp_path / "w/results.json").read_text())
  assert any("roc_auc" in k for k in saved) and any("threshold" in k for k in saved)


@pytest.mark.slow
def test_without_holdout_threshold_comes_from_training_pairs(tmp_path, small_mnist):
  r = train_and_evaluate(Config(epochs=1, batch_size=16), tmp_path / "w", small_mnist)
  assert r["threshold_source"] == "training pairs" and r["num_val_pairs"] == 0
  assert 0.5 <= r["test_roc_auc"] <= 1
