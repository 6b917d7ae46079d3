"""Retrieval metrics of an embedding, as metric learning reports them.

As in Musgrave, Belongie & Lim (2020) and pytorch-metric-learning's
`AccuracyCalculator(k="max_bin_count")`, each query is searched against
the references (by default every other image of its set). R is the count
of references of its class, k the largest R:

* P@1: the nearest neighbour shares the query's class;
* R-Precision: same-class references among the R nearest, over R;
* MAP@R: (1/R) sum_{i<=R} P(i) rel(i), P(i) the precision of the first i;
* mean average precision: (1/R) sum_{i<=k} P(i) rel(i);
* mean reciprocal rank: 1 / the first same-class rank within k, else 0.

Averaged over queries ("query") or classes ("class", PML's avg_of_avgs).
A query with R = 0 is left out and counted. The search is
`siamese_jax.losses.distances`' exact one, with two extra candidates
re-ranked by the exact distance; each block is reduced as soon as it is
searched, so neither Q x N distances nor Q x k ids exist at once (k is
1,134 on MNIST's test set). Tests hold all five to brute-force NumPy;
benchmarks/retrieval_pml.py to PML.
"""

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.losses.distances import DEFAULT_BUDGET_BYTES, found_distances, nearest_reduced

METRICS = (
  "precision_at_1", "r_precision", "map_at_r", "mean_average_precision", "mean_reciprocal_rank",
)  # fmt: skip
AVERAGES = ("query", "class")


def block_metrics(start, queries, nearest_ids, extra, gallery) -> jax.Array:
  """float32[b, 5]: a block's `METRICS`, a `nearest_reduced` reduction.

  `extra` is (query labels int32[Q], reference labels int32[N], R int32[Q],
  k int32[]); rows with R = 0 are the caller's to drop. The first k of
  `nearest_ids` int32[b, w] count, re-ranked here by exact distance.
  """
  query_labels, labels, r, k_max = extra
  nearest_ids = _exact_order(queries, gallery, nearest_ids)
  size, k = nearest_ids.shape
  ranks = jnp.arange(k)
  q_labels = jax.lax.dynamic_slice_in_dim(query_labels, start, size)
  q_r = jax.lax.dynamic_slice_in_dim(r, start, size)
  rel = (labels[nearest_ids] == q_labels[:, None]) & (ranks[None, :] < k_max)
  rel_r = rel & (ranks[None, :] < q_r[:, None])  # only the first R count
  hits = jnp.cumsum(rel_r, axis=1)
  denom = jnp.maximum(q_r, 1).astype(jnp.float32)
  precision_at_1 = rel[:, 0].astype(jnp.float32)
  r_precision = hits[:, -1] / denom
  precision_at_i = hits / (ranks[None, :] + 1.0)
  map_at_r = jnp.sum(jnp.where(rel_r, precision_at_i, 0.0), axis=1) / denom
  all_hits = jnp.cumsum(rel, axis=1)
  mean_ap = jnp.sum(jnp.where(rel, all_hits / (ranks[None, :] + 1.0), 0.0), axis=1) / denom
  first = jnp.argmax(rel, axis=1)
  reciprocal = jnp.where(rel.any(axis=1), 1.0 / (first + 1.0), 0.0)
  return jnp.stack([precision_at_1, r_precision, map_at_r, mean_ap, reciprocal], axis=1)


# Candidates searched beyond k, re-ranked by their exact distance and cut:
# the search ranks by ||q||^2 + ||g||^2 - 2 q.g, whose float32 rounding
# (about 5e-6 of a distance) can swap near ties across a class's R-th place.
_SPARE = 2
_CHUNK = 32  # neighbours whose exact distances are computed at once


def _exact_order(queries: jax.Array, gallery: jax.Array, ids: jax.Array) -> jax.Array:
  """int32[b, w]: found ids by exact distance, ties lower, `_CHUNK` neighbours at a time."""
  b, w = ids.shape
  cols = jnp.pad(ids, ((0, 0), (0, -w % _CHUNK))).reshape(b, -1, _CHUNK).transpose(1, 0, 2)
  d = jax.lax.map(lambda c: found_distances(queries, gallery, c), cols)
  d = d.transpose(1, 0, 2).reshape(b, -1)[:, :w]
  return jnp.take_along_axis(ids, jnp.lexsort((ids, d), axis=1), axis=1)


def retrieval_metrics(
  embeddings,
  labels,
  *,
  reference_embeddings=None,
  reference_labels=None,
  average: str = "query",
  budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> dict[str, float | int | None]:
  """The `METRICS` of float[Q, D] queries with int[Q] labels >= 0, averaged.

  References (float[N, D], int[N]) are searched alone when given, else each
  query against the other queries. `average` is "query" or "class";
  `budget_bytes` bounds the search, not the results. Returns each metric
  (None if no query is kept), "num_queries" and "skipped_queries".
  """
  labels = np.asarray(labels)
  if average not in AVERAGES:
    raise ValueError(f"average={average!r}: use one of {', '.join(AVERAGES)}.")
  if np.ndim(embeddings) != 2 or np.shape(embeddings)[0] != len(labels):
    raise ValueError(
      f"embeddings must be (N, D) with N = {len(labels)} labels, got {np.shape(embeddings)}."
    )
  same_set = reference_embeddings is None
  if same_set != (reference_labels is None):
    raise ValueError("Give reference_embeddings and reference_labels together, or neither.")
  references = embeddings if same_set else reference_embeddings
  ref_labels = labels if same_set else np.asarray(reference_labels)
  if np.ndim(references) != 2 or np.shape(references) != (len(ref_labels), np.shape(embeddings)[1]):
    raise ValueError(
      f"reference_embeddings must be (N, {np.shape(embeddings)[1]}) with N = {len(ref_labels)} "
      f"reference_labels, got {np.shape(references)}."
    )
  counts = np.bincount(ref_labels, minlength=int(labels.max(initial=0)) + 1)
  r = counts[labels] - int(same_set)
  kept = r > 0
  out = {"num_queries": int(kept.sum()), "skipped_queries": int(len(labels) - kept.sum())}
  if not kept.any():
    return {**dict.fromkeys(METRICS), **out}
  k = int(r.max())
  wide = min(k + _SPARE, len(ref_labels) - int(same_set))
  extra = tuple(jnp.asarray(a, jnp.int32) for a in (labels, ref_labels, r, k))
  rows = jax.ShapeDtypeStruct((len(METRICS),), jnp.float32)
  per = nearest_reduced(
    embeddings, references, wide, block_metrics, rows, extra, exclude_self=same_set,
    budget_bytes=budget_bytes,
  )  # fmt: skip
  per = np.asarray(per)[kept].astype(np.float64)
  if average == "class":
    classes, inverse = np.unique(labels[kept], return_inverse=True)
    per = np.stack([per[inverse == c].mean(axis=0) for c in range(len(classes))])
  means = per.mean(axis=0)
  return {**{m: float(v) for m, v in zip(METRICS, means, strict=True)}, **out}
