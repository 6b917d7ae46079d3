"""Retrieval metrics of an embedding, as metric learning reports them.

Musgrave, Belongie & Lim (2020), "A Metric Learning Reality Check", and
pytorch-metric-learning's `AccuracyCalculator(k="max_bin_count")` define,
for every query searched against the references (by default every *other*
image of the same set):

* R: the number of references of the query's class;
* k: the largest R of any query (the neighbours searched);
* P@1: whether the nearest neighbour shares the query's class;
* R-Precision: (same-class references among the R nearest) / R;
* MAP@R: (1/R) * sum over i <= R of P(i) * rel(i), where rel(i) says
  whether the i-th neighbour shares the class and P(i) is the precision of
  the first i neighbours;
* mean average precision: (1/R) * sum over i <= k of P(i) * rel(i);
* mean reciprocal rank: 1 / the rank of the first same-class neighbour
  within k, or 0 if there is none.

Each is averaged over the queries ("query"), or over each class's queries
and then over the classes ("class", PML's avg_of_avgs). A query whose class
has no reference (R = 0) is left out and counted. Tests hold all five to a
brute-force NumPy version, and benchmarks/retrieval_pml.py to PML itself.

The search is the exact one of `siamese_jax.losses.distances`: ranked by
squared Euclidean distance, ties to the lower index, a block of queries at
a time; two candidates beyond k are then re-ranked by their exact distance
(`euclidean_distance`, the model's own), as `nearest` does, so near ties
come out in the order of the distances and not of the expansion's rounding. Each block is reduced to its queries' metrics as soon as its
neighbours are known (`nearest_reduced`), so neither the Q x N distances
nor the Q x k neighbour ids and their distances exist at once (on MNIST's
10,000 test images k is 1,134).
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
  """float32[b, 5]: the `METRICS` of a block of b queries, in that order.

  A `nearest_reduced` reduction. `extra` is (query labels int32[Q],
  reference labels int32[N], r int32[Q], k int32[]), r each query's R and
  k their largest; rows with R = 0 are meaningless and for the caller to
  drop. `nearest_ids` int32[b, w], w >= k: the search's nearest first,
  re-ranked here by exact distance; only the first k count.
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
  """int32[b, w]: each row of found ids by `euclidean_distance`, ties to the lower id.

  The distances are made `_CHUNK` neighbours at a time, so the gathered
  gallery rows take b * _CHUNK * D floats, not b * w * D.
  """
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
  """The `METRICS` of every query, against the references or all the other queries.

  Args:
    embeddings: float[Q, D] the queries (host or device).
    labels: int[Q] their class ids >= 0.
    reference_embeddings, reference_labels: float[N, D] and int[N], what the
      queries are searched against (only those); None: each query against
      all the other queries.
    average: "query", the mean over the queries; or "class", the mean over
      each class's queries, then over the classes.
    budget_bytes: bounds the search's distance blocks (results do not depend on it).

  Returns:
    {each of `METRICS`: its mean over the queries kept (None if none is),
    "num_queries": queries kept, "skipped_queries": queries whose class has
    no reference}.
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
