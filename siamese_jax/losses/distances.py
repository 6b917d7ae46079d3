"""The one embedding distance, and every form built on it.

d(a, b) = sqrt(max(||a - b||^2, eps)), eps = 1e-7 (the Keras original's):
the clamp keeps the gradient finite where a == b. Every distance in the
library goes through `from_squared`:

* `euclidean_distance(a, b)`: row by row, float[B, D] x 2 -> float[B];
* `pairwise_distances(q, g)`: every query against every row, small sets;
* `pair_distances(e, pairs)`: index pairs of one set, a chunk at a time;
* `nearest(queries, gallery, k)`: exact k nearest, on the device, in
  blocks sized by a memory budget so the full matrix never exists. Ranked
  by ||q||^2 + ||g||^2 - 2 q.g (float32, highest precision), ties to the
  lower id; a few extra candidates are re-ranked by `euclidean_distance`;
* `nearest_reduced`: the same search, each block reduced before the next.

Shapes are checked where a (B, 1) meeting a (B,) could broadcast to (B, B).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core.parallel import chunked_rows

# Keras' backend epsilon: the original clamps the squared distance to it so
# that sqrt never sees 0, where its gradient is infinite.
DISTANCE_EPS = 1e-7
DEFAULT_BUDGET_BYTES = 128 * 2**20


def from_squared(sq, eps: float = DISTANCE_EPS):
  """sqrt(max(sq, eps)): distances from squared distances (numpy or JAX arrays, any shape)."""
  xp = jnp if isinstance(sq, jax.Array) else np
  return xp.sqrt(xp.maximum(sq, eps))


def euclidean_distance(a: jax.Array, b: jax.Array, eps: float = DISTANCE_EPS) -> jax.Array:
  """float[B] sqrt(max(||a - b||^2, eps)) per row of float[B, D] a and b; each >= sqrt(eps)."""
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"euclidean_distance needs two (B, D) arrays, got {a.shape} and {b.shape}.")
  return from_squared(jnp.sum(jnp.square(a - b), axis=-1), eps)


def _expand(sq_q: jax.Array, sq_g: jax.Array, dots: jax.Array) -> jax.Array:
  """||q||^2 + ||g||^2 - 2 q.g from the squared norms float[Q], float[N] and dots float[Q, N]."""
  return sq_q[:, None] + sq_g[None, :] - 2.0 * dots


def pairwise_distances(queries: jax.Array, gallery: jax.Array) -> jax.Array:
  """float32[Q, N]: every query float[Q, D] to every gallery row float[N, D].

  Exactly as `euclidean_distance`, through a [Q, N, D] array: for small sets
  (Lake's runs are 20 x 20); large ones go through `nearest`.
  """
  q, g = jnp.asarray(queries, jnp.float32), jnp.asarray(gallery, jnp.float32)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(f"queries and gallery must be (Q, D) and (N, D), got {q.shape} and {g.shape}.")
  return from_squared(jnp.sum(jnp.square(q[:, None, :] - g[None, :, :]), axis=-1))


def block_sizes(
  num_queries: int, gallery_size: int, dim: int, budget_bytes: int
) -> tuple[int, int]:
  """(query block, gallery block) whose working set fits the budget.

  Per gallery row: the matmul's output and its distances (two float32 per
  query of the block) and the row itself (float32[dim], room for one copy).
  """
  qb = max(1, min(num_queries, 256))
  gb = max(1, min(gallery_size, budget_bytes // (4 * (2 * qb + 2 * dim))))
  if GROUP <= gb < gallery_size:
    gb -= gb % GROUP  # whole groups: `_smallest`'s fast path
  return qb, gb


def nearest(
  queries,
  gallery,
  k: int,
  *,
  exclude_self: bool = False,
  budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[jax.Array, jax.Array]:
  """Exact k nearest gallery rows float32[N, D] of each query float32[Q, D].

  k is in 1..N (N - 1 with `exclude_self`, where the queries are the gallery
  and query i never finds i). Returns (distances float32[Q, k], ids
  int32[Q, k]), nearest first, ties to the lower id.
  """
  # Two more candidates than asked, ranked by the expansion, then re-ranked
  # by the exact distance and cut: near ties, where the two disagree (by
  # about 5e-6), come back in the order of the distances returned with them.
  n = np.shape(gallery)[0]
  wide = max(min(n - exclude_self, k + 2), k)  # near ties differ by ~5e-6: two suffice
  rows = (jax.ShapeDtypeStruct((wide,), jnp.float32), jax.ShapeDtypeStruct((wide,), jnp.int32))
  d, ids = nearest_reduced(
    queries, gallery, wide, _with_distances, rows, exclude_self=exclude_self,
    budget_bytes=budget_bytes,
  )  # fmt: skip
  return d[:, :k], ids[:, :k]


def nearest_reduced(
  queries,
  gallery,
  k: int,
  reduce: Callable[..., Any],
  out_rows: Any,
  extra: Any = None,
  *,
  exclude_self: bool = False,
  budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Any:
  """`nearest`'s search, each query block reduced as soon as its neighbours are known.

  So the [Q, k] ids never exist at once (retrieval needs k up to a class's
  size). `reduce(start, queries float32[b, D], ids int32[b, k], extra)` is a
  module-level function (it keys the compilation) returning one row of
  `out_rows` (a tree of `jax.ShapeDtypeStruct`) per query; `extra` is a tree
  of traced arrays. Returns the rows stacked over the queries.
  """
  q, g = jnp.asarray(queries, jnp.float32), jnp.asarray(gallery, jnp.float32)
  n = g.shape[0]
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(f"queries and gallery must be (Q, D) and (N, D), got {q.shape} and {g.shape}.")
  if not 1 <= k <= n - exclude_self:
    raise ValueError(f"k={k} must lie in 1..{n - exclude_self} for a gallery of {n}.")
  if q.shape[0] == 0:
    return jax.tree.map(lambda r: jnp.zeros((0, *r.shape), r.dtype), out_rows)
  qb, gb = block_sizes(q.shape[0], n, q.shape[1], budget_bytes)
  return _search(
    q, g, extra, k=k, query_block=qb, gallery_block=gb, exclude_self=exclude_self,
    reduce=reduce, out_rows=out_rows,
  )  # fmt: skip


def _with_distances(start, q, ids, extra, gallery):
  """`nearest`'s reduction: the found rows by their exact distance (ties: lower id first)."""
  del start, extra
  d = found_distances(q, gallery, ids)
  order = jnp.lexsort((ids, d), axis=1)
  return jnp.take_along_axis(d, order, axis=1), jnp.take_along_axis(ids, order, axis=1)


@functools.partial(
  jax.jit,
  static_argnames=("k", "query_block", "gallery_block", "exclude_self", "reduce", "out_rows"),
)
def _search(
  queries, gallery, extra, *, k, query_block, gallery_block, exclude_self, reduce, out_rows
):
  n = gallery.shape[0]
  gb = gallery_block
  blocks = -(-n // gb)
  sq_g = jnp.sum(jnp.square(gallery), axis=1)

  def one(start, size):
    q = jax.lax.dynamic_slice_in_dim(queries, start, size)
    sq_q = jnp.sum(jnp.square(q), axis=1)
    rows = start + jnp.arange(size)

    def block(i):
      # The last block is clamped to end at n; rows an earlier block ranked
      # are masked, so none is counted twice.
      first = jnp.minimum(i * gb, n - gb)
      g = jax.lax.dynamic_slice_in_dim(gallery, first, gb)
      dots = jax.lax.dot_general(  # q @ g.T, without a transposed copy of g
        q, g, (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST
      )
      d2 = _expand(sq_q, jax.lax.dynamic_slice_in_dim(sq_g, first, gb), dots)
      ids = first + jnp.arange(gb)
      masked = (ids < i * gb)[None, :]
      if exclude_self:
        masked = masked | (rows[:, None] == ids[None, :])
      d2 = jnp.where(masked, jnp.inf, d2)
      d2, pos = _smallest(d2, min(k, gb))
      return d2, ids[pos]

    d2, ids = block(0)
    if blocks > 1:
      pad = k - d2.shape[1]
      d2 = jnp.pad(d2, ((0, 0), (0, pad)), constant_values=jnp.inf)
      ids = jnp.pad(ids, ((0, 0), (0, pad)), constant_values=n)

      def merge(i, best):
        # The running best holds lower ids than block i, and goes first:
        # top_k keeps the first of equal values, so ties go to the lower id.
        bd, bi = best
        nd, ni = block(i)
        cd, ci = jnp.concatenate([bd, nd], axis=1), jnp.concatenate([bi, ni], axis=1)
        neg, pos = jax.lax.top_k(-cd, k)
        return -neg, jnp.take_along_axis(ci, pos, axis=1)

      d2, ids = jax.lax.fori_loop(1, blocks, merge, (d2, ids))
    return reduce(start, q, ids, extra, gallery)

  return chunked_rows(one, queries.shape[0], query_block, out_rows)


def found_distances(queries: jax.Array, gallery: jax.Array, ids: jax.Array) -> jax.Array:
  """float32[Q, k]: `euclidean_distance` from each query float[Q, D] to its rows ids int[Q, k]."""
  q, k = queries.shape[0], ids.shape[1]
  found = gallery[ids.reshape(-1)]
  return euclidean_distance(jnp.repeat(queries, k, axis=0), found).reshape(q, k)


GROUP = 64  # columns per group in `_smallest`'s first pass


def _smallest(d2: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k smallest of each row, ascending, ties to the lower column: (values, columns) [R, k].

  `lax.top_k` over a long row costs several times its matmul on CPU, so rows
  that split into groups of `GROUP` go in two passes: the k groups with the
  smallest minima hold the k smallest values, so `top_k` runs over the group
  minima, then over those groups (in column order, keeping ties lower).
  """
  rows, width = d2.shape
  groups = width // GROUP
  if width % GROUP or groups <= k:
    neg, pos = jax.lax.top_k(-d2, k)
    return -neg, pos
  grouped = d2.reshape(rows, groups, GROUP)
  _, chosen = jax.lax.top_k(-jnp.min(grouped, axis=2), k)
  chosen = jnp.sort(chosen, axis=1)
  values = jnp.take_along_axis(grouped, chosen[:, :, None], axis=1).reshape(rows, k * GROUP)
  columns = (chosen[:, :, None] * GROUP + jnp.arange(GROUP)[None, None, :]).reshape(rows, -1)
  neg, pos = jax.lax.top_k(-values, k)
  return -neg, jnp.take_along_axis(columns, pos, axis=1)


@functools.partial(jax.jit, static_argnames="chunk")
def pair_distances(embeddings: jax.Array, pairs: jax.Array, *, chunk: int = 8192) -> jax.Array:
  """float32[P] distances of int32[P, 2] pairs of float32[N, D], `chunk` pairs at a time."""

  def dist(start, size):
    p = jax.lax.dynamic_slice_in_dim(pairs, start, size)
    return euclidean_distance(embeddings[p[:, 0]], embeddings[p[:, 1]])

  return chunked_rows(dist, pairs.shape[0], chunk, (), jnp.float32)
