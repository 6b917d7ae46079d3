"""Retrieval metrics of an embedding, as metric learning reports them.

Musgrave, Belongie & Lim (2020), "A Metric Learning Reality Check", and
pytorch-metric-learning's AccuracyCalculator define, for every query image
searched against all *other* images of the same set:

* R: the number of other images of the query's class;
* P@1: whether the nearest neighbour shares the query's class;
* R-Precision: (same-class images among the R nearest) / R;
* MAP@R: (1/R) * sum over i <= R of P(i) * rel(i), where rel(i) says
  whether the i-th neighbour shares the class and P(i) is the precision of
  the first i neighbours.

Each is averaged over the queries. A query whose class has no other image
(R = 0) is skipped and counted.

The search is the exact one of `siamese_jax.losses.distances`, every image
against all the others: ranked by squared Euclidean distance, ties to the
lower index, a block of queries at a time. Each block is reduced to its
queries' three metrics as soon as its neighbours are known
(`nearest_reduced`), so neither the N x N distances nor the N x max(R)
neighbour ids and their distances exist at once (on MNIST's 10,000 test
images max(R) is 1,134).
"""

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.losses.distances import DEFAULT_BUDGET_BYTES, nearest_reduced

METRICS = ("precision_at_1", "r_precision", "map_at_r")


def block_metrics(start, queries, nearest_ids, extra, gallery) -> jax.Array:
  """float32[b, 3]: P@1, R-Precision and MAP@R of a block of b queries.

  A `nearest_reduced` reduction. `extra` is (labels int32[N], r int32[N]),
  r the number of other images of each query's class (R); rows with R = 0
  are meaningless and for the caller to drop. `nearest_ids` int32[b, k],
  nearest first, k >= max(R).
  """
  del queries, gallery
  labels, r = extra
  size, k = nearest_ids.shape
  ranks = jnp.arange(k)
  q_labels = jax.lax.dynamic_slice_in_dim(labels, start, size)
  q_r = jax.lax.dynamic_slice_in_dim(r, start, size)
  rel = labels[nearest_ids] == q_labels[:, None]
  rel_r = rel & (ranks[None, :] < q_r[:, None])  # only the first R count
  hits = jnp.cumsum(rel_r, axis=1)
  denom = jnp.maximum(q_r, 1).astype(jnp.float32)
  precision_at_1 = rel[:, 0].astype(jnp.float32)
  r_precision = hits[:, -1] / denom
  precision_at_i = hits / (ranks[None, :] + 1.0)
  map_at_r = jnp.sum(jnp.where(rel_r, precision_at_i, 0.0), axis=1) / denom
  return jnp.stack([precision_at_1, r_precision, map_at_r], axis=1)


def retrieval_metrics(
  embeddings, labels, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> dict[str, float | int | None]:
  """P@1, R-Precision and MAP@R of every image against all the others.

  Args:
    embeddings: float[N, D] (host or device).
    labels: int[N] class ids >= 0.
    budget_bytes: bounds the search's distance blocks (results do not depend on it).

  Returns:
    {"precision_at_1", "r_precision", "map_at_r": means over the queries
    kept (None if none is), "num_queries": queries kept, "skipped_queries":
    queries whose class has no other image}.
  """
  labels = np.asarray(labels)
  n = len(labels)
  if np.ndim(embeddings) != 2 or np.shape(embeddings)[0] != n:
    raise ValueError(f"embeddings must be (N, D) with N = {n} labels, got {np.shape(embeddings)}.")
  r = np.bincount(labels)[labels] - 1
  kept = r > 0
  out = {"num_queries": int(kept.sum()), "skipped_queries": int(n - kept.sum())}
  if not kept.any():
    return {**dict.fromkeys(METRICS), **out}
  k = min(int(r.max()), n - 1)
  extra = (jnp.asarray(labels, jnp.int32), jnp.asarray(r, jnp.int32))
  rows = jax.ShapeDtypeStruct((3,), jnp.float32)
  per = nearest_reduced(
    embeddings, embeddings, k, block_metrics, rows, extra, exclude_self=True,
    budget_bytes=budget_bytes,
  )  # fmt: skip
  means = np.asarray(per)[kept].astype(np.float64).mean(axis=0)
  return {**{m: float(v) for m, v in zip(METRICS, means, strict=True)}, **out}
