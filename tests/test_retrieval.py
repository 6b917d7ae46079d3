"""Retrieval metrics against a brute-force numpy reference."""

import numpy as np
import pytest

from siamese_jax import retrieval_metrics


def reference(emb: np.ndarray, labels: np.ndarray) -> dict:
  """P@1, R-Precision, MAP@R by the definitions, one query at a time, in float64."""
  emb = emb.astype(np.float64)
  n = len(labels)
  p1, rp, mapr, skipped = [], [], [], 0
  for q in range(n):
    others = np.array([i for i in range(n) if i != q])
    d = np.sqrt(((emb[others] - emb[q]) ** 2).sum(1))
    order = others[np.lexsort((others, d))]  # by distance, ties by lower index
    r = int((labels[others] == labels[q]).sum())
    if r == 0:
      skipped += 1
      continue
    rel = labels[order] == labels[q]
    p1.append(float(rel[0]))
    rp.append(rel[:r].sum() / r)
    prec = np.cumsum(rel[:r]) / np.arange(1, r + 1)
    mapr.append((prec * rel[:r]).sum() / r)
  return {
    "precision_at_1": np.mean(p1),
    "r_precision": np.mean(rp),
    "map_at_r": np.mean(mapr),
    "num_queries": n - skipped,
    "skipped_queries": skipped,
  }


def assert_matches(got, want):
  for k in ("num_queries", "skipped_queries"):
    assert got[k] == want[k], k
  for k in ("precision_at_1", "r_precision", "map_at_r"):
    assert got[k] == pytest.approx(want[k], abs=1e-6), k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_embeddings_match_the_reference(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, 57)
  emb = rng.normal(size=(57, 5)).astype(np.float32) + labels[:, None] * 0.3
  assert_matches(retrieval_metrics(emb, labels, budget_bytes=4000), reference(emb, labels))


def test_ties_are_broken_by_lower_index():
  # Small integer coordinates: every distance is exact in float32, and many
  # are equal, so the order among ties decides the metrics.
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 40)
  emb = rng.integers(0, 2, (40, 2)).astype(np.float32)
  got = retrieval_metrics(emb, labels, budget_bytes=5376)
  assert_matches(got, reference(emb, labels))
  # And the tie-break matters here: reversing the images changes the result.
  flipped = reference(emb[::-1], labels[::-1])
  assert flipped["map_at_r"] != pytest.approx(got["map_at_r"], abs=1e-9)


def test_a_one_member_class_is_skipped_and_counted():
  labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 has no other image
  emb = np.array([[0.0], [0.1], [5.0], [5.1], [0.2], [9.0]], np.float32)
  got = retrieval_metrics(emb, labels)
  assert got["skipped_queries"] == 1 and got["num_queries"] == 5
  assert_matches(got, reference(emb, labels))


def test_perfect_and_no_queries():
  emb = np.array([[0.0], [0.1], [10.0], [10.1]], np.float32)
  got = retrieval_metrics(emb, np.array([0, 0, 1, 1]))
  assert got["precision_at_1"] == got["r_precision"] == got["map_at_r"] == 1.0
  none = retrieval_metrics(emb, np.array([0, 1, 2, 3]))
  assert none["precision_at_1"] is None and none["skipped_queries"] == 4


def test_block_size_does_not_change_the_result():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 5, 101)
  emb = rng.normal(size=(101, 3)).astype(np.float32)
  a = retrieval_metrics(emb, labels, budget_bytes=3000)  # gallery blocks of a few rows
  b = retrieval_metrics(emb, labels)  # one block
  assert a == b
