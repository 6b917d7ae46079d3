"""Retrieval metrics against a brute-force numpy reference."""

import numpy as np
import pytest

from siamese_jax import retrieval_metrics

METRICS = ("precision_at_1", "r_precision", "map_at_r", "mean_average_precision",
           "mean_reciprocal_rank")  # fmt: skip


def reference(emb, labels, ref=None, ref_labels=None, average="query") -> dict:
  """The five metrics by their definitions, one query at a time, in float64."""
  emb = emb.astype(np.float64)
  same = ref is None
  ref, ref_labels = (emb, labels) if same else (ref.astype(np.float64), ref_labels)
  counts = {c: int((ref_labels == c).sum()) - same for c in set(labels.tolist())}
  k = max(counts.values())
  rows, kept_labels, skipped = [], [], 0
  for q in range(len(labels)):
    others = np.array([i for i in range(len(ref_labels)) if not (same and i == q)])
    d = np.sqrt(((ref[others] - emb[q]) ** 2).sum(1))
    order = others[np.lexsort((others, d))][:k]  # by distance, ties by lower index
    r = counts[labels[q]]
    if r == 0:
      skipped += 1
      continue
    rel = ref_labels[order] == labels[q]
    prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    first = np.flatnonzero(rel)
    rows.append([float(rel[0]), rel[:r].sum() / r, (prec[:r] * rel[:r]).sum() / r,
                 (prec * rel).sum() / r, 1 / (first[0] + 1) if len(first) else 0.0])  # fmt: skip
    kept_labels.append(labels[q])
  rows, kept_labels = np.array(rows), np.array(kept_labels)
  if average == "class":
    rows = np.stack([rows[kept_labels == c].mean(0) for c in np.unique(kept_labels)])
  out = dict(zip(METRICS, rows.mean(0), strict=True))
  return {**out, "num_queries": len(labels) - skipped, "skipped_queries": skipped}


def assert_matches(got, want):
  for k in ("num_queries", "skipped_queries"):
    assert got[k] == want[k], k
  for k in METRICS:
    assert got[k] == pytest.approx(want[k], abs=1e-6), k


@pytest.mark.parametrize("average", ["query", "class"])
@pytest.mark.parametrize("seed", [0, 1])
def test_queries_against_references_match_the_reference(seed, average):
  rng = np.random.default_rng(10 + seed)
  labels = rng.integers(0, 6, 40)
  ref_labels = rng.integers(1, 7, 70)  # class 0 has no reference, class 6 no query
  emb = rng.normal(size=(40, 4)).astype(np.float32) + labels[:, None] * 0.3
  ref = rng.normal(size=(70, 4)).astype(np.float32) + ref_labels[:, None] * 0.3
  got = retrieval_metrics(emb, labels, reference_embeddings=ref, reference_labels=ref_labels,
                          average=average, budget_bytes=3000)  # fmt: skip
  want = reference(emb, labels, ref, ref_labels, average)
  assert want["skipped_queries"] == int((labels == 0).sum()) > 0
  assert_matches(got, want)


def test_near_ties_are_ranked_by_their_exact_distance():
  # Far from the origin, ||q||^2 + ||g||^2 - 2 q.g rounds away differences
  # between neighbours; with this seed it swaps two across a class's R-th place.
  rng = np.random.default_rng(10)
  labels = rng.integers(0, 3, 30)
  emb = (rng.normal(size=(30, 3)) + 50.0).astype(np.float32)
  assert_matches(retrieval_metrics(emb, labels), reference(emb, labels))


def test_class_averages_weigh_each_class_once():
  rng = np.random.default_rng(5)
  labels = np.repeat([0, 1, 2], [30, 5, 5])  # one large class
  emb = rng.normal(size=(40, 3)).astype(np.float32) + (labels == 0)[:, None] * 2.0
  by_query = retrieval_metrics(emb, labels)
  by_class = retrieval_metrics(emb, labels, average="class")
  assert_matches(by_class, reference(emb, labels, average="class"))
  assert by_class["map_at_r"] < by_query["map_at_r"]  # the easy large class counts once
  with pytest.raises(ValueError, match="average='mean'"):
    retrieval_metrics(emb, labels, average="mean")
  with pytest.raises(ValueError, match="together"):
    retrieval_metrics(emb, labels, reference_embeddings=emb)


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
  assert {got[m] for m in METRICS} == {1.0}
  none = retrieval_metrics(emb, np.array([0, 1, 2, 3]))
  assert none["precision_at_1"] is None and none["skipped_queries"] == 4


def test_block_size_does_not_change_the_result():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 5, 101)
  emb = rng.normal(size=(101, 3)).astype(np.float32)
  a = retrieval_metrics(emb, labels, budget_bytes=3000)  # gallery blocks of a few rows
  b = retrieval_metrics(emb, labels)  # one block
  assert a == b
