"""ROC AUC and the validation-chosen threshold, against hand values and brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siamese_jax.evaluation.pairs import accuracy_at, best_threshold, roc_auc


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
