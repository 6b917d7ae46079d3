"""Recognize from a gallery: exact nearest neighbours, "unknown", calibration, saving.

    model = sj.load_trained(workdir)
    index = model.index(gallery_images, gallery_labels)   # an Index
    index.search_images(query_images, k=5)                # (distances, ids), [Q, k] each
    index.classify(query_images, threshold=0.6)           # labels, or "unknown"
    sj.calibrate(index, heldout_images, heldout_labels)   # picks and keeps a threshold
    index.save("gallery.index"); sj.load_index("gallery.index", model=model)

`Index.from_embeddings(embeddings, labels)` builds one from embeddings made
elsewhere. Labels are integers or strings.

The search (`nearest`) is exact and runs on the device, a block of queries
against a block of the gallery at a time, so the whole query x gallery
matrix never exists; the blocks follow a memory budget. Neighbours are
ranked by squared Euclidean distance, ||q||^2 + ||g||^2 - 2 q.g in float32
at the highest matmul precision, merged block by block with ties going to
the lower gallery id; the distances returned are then recomputed directly,
sqrt(max(||q - g||^2, 1e-7)), as the model's own. The retrieval metrics
(`siamese_jax.retrieval`) rank with the same function.

With the optional extra `[faiss]` (faiss-cpu), `backend="faiss-flat"`,
`"faiss-hnsw"` or `"faiss-ivf"` searches with faiss behind the same API
(flat is exact; HNSW and IVF are approximate). Nothing else imports faiss.

An index file is a numpy `.npz` read with `allow_pickle=False`, since an
index may come from someone else: the embeddings, the labels, the
threshold, a format version, and a fingerprint of the model that made the
embeddings; a model that does not match is refused. It is written to a
temporary file and renamed.
"""

import dataclasses
import functools
import hashlib
import io
import math

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.errors import SiameseJaxError
from siamese_jax.evaluation import chunked_rows
from siamese_jax.files import atomic_write_bytes
from siamese_jax.losses import euclidean_distance

UNKNOWN = "unknown"
BACKENDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
FORMAT = "siamese_jax.index"
VERSION = 1
DEFAULT_BUDGET_BYTES = 128 * 2**20


class SearchIndexError(SiameseJaxError):
  """An index that cannot be built, searched, read or used with this model."""


def block_sizes(
  num_queries: int, gallery_size: int, dim: int, budget_bytes: int
) -> tuple[int, int]:
  """(query block, gallery block) whose working set fits the budget.

  The budget covers, per gallery row of a block, the matmul's output and the
  distances made from it (two float32 per query of the block) and the
  block's slice of the gallery (float32[dim], with room for one copy).
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
  """Exact k nearest gallery rows of each query (see the module docstring).

  Args:
    queries: float32[Q, D].
    gallery: float32[N, D].
    k: neighbours per query, 1 <= k <= N (N - 1 with `exclude_self`).
    exclude_self: queries are the gallery itself; query i never finds i.
    budget_bytes: bounds the distance blocks.

  Returns:
    (distances float32[Q, k], ids int32[Q, k]), nearest first.
  """
  q, g = jnp.asarray(queries, jnp.float32), jnp.asarray(gallery, jnp.float32)
  n = g.shape[0]
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ValueError(f"queries and gallery must be (Q, D) and (N, D), got {q.shape} and {g.shape}.")
  if not 1 <= k <= n - exclude_self:
    raise ValueError(f"k={k} must lie in 1..{n - exclude_self} for a gallery of {n}.")
  if q.shape[0] == 0:
    return jnp.zeros((0, k), jnp.float32), jnp.zeros((0, k), jnp.int32)
  qb, gb = block_sizes(q.shape[0], n, q.shape[1], budget_bytes)
  return _nearest(q, g, k=k, query_block=qb, gallery_block=gb, exclude_self=exclude_self)


@functools.partial(jax.jit, static_argnames=("k", "query_block", "gallery_block", "exclude_self"))
def _nearest(queries, gallery, *, k, query_block, gallery_block, exclude_self):
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
      d2 = sq_q[:, None] + jax.lax.dynamic_slice_in_dim(sq_g, first, gb)[None, :] - 2.0 * dots
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
    return _distances(q, gallery, ids), ids

  rows = (jax.ShapeDtypeStruct((k,), jnp.float32), jax.ShapeDtypeStruct((k,), jnp.int32))
  return chunked_rows(one, queries.shape[0], query_block, rows)


def _distances(queries: jax.Array, gallery: jax.Array, ids: jax.Array) -> jax.Array:
  """float32[Q, k]: the model's distance from each query to its found gallery rows."""
  q, k = queries.shape[0], ids.shape[1]
  found = gallery[ids.reshape(-1)]
  return euclidean_distance(jnp.repeat(queries, k, axis=0), found).reshape(q, k)


GROUP = 64  # columns per group in `_smallest`'s first pass


def _smallest(d2: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k smallest of each row, ascending, ties to the lower column.

  `lax.top_k` over a whole long row costs several times the matmul that
  made it on CPU, so when the row splits into groups of `GROUP` columns the
  search goes in two passes: the k groups with the smallest minima hold
  the k smallest values (a group holding one of them has its minimum at or
  below the k-th smallest, and at most k groups can), so `top_k` runs over
  the group minima, then over those k groups' values. The k groups are
  taken in column order, so `top_k`'s preference for the first of equal
  values still means the lower column.

  Returns:
    (values float32[R, k], columns int32[R, k]).
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


def _faiss():
  try:
    import faiss
  except ImportError:
    raise SearchIndexError(
      "The faiss backends need faiss, which is not installed. Install the extra: "
      "pip install -e '.[faiss]' (or pip install faiss-cpu), or use the exact backend."
    ) from None
  return faiss


def _faiss_index(backend: str, embeddings: np.ndarray):
  faiss = _faiss()
  n, d = embeddings.shape
  if backend == "faiss-flat":
    index = faiss.IndexFlatL2(d)
  elif backend == "faiss-hnsw":
    index = faiss.IndexHNSWFlat(d, 32)
    index.hnsw.efSearch = 64
  else:  # faiss-ivf: about 4 sqrt(N) lists, 16 of them searched
    nlist = max(1, min(n // 39, int(4 * math.sqrt(n))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.train(embeddings)
    index.nprobe = min(16, nlist)
  index.add(embeddings)
  return index


@dataclasses.dataclass
class Index:
  """A gallery of embeddings and their labels, searched exactly (or by faiss).

  Attributes:
    labels: the gallery's labels, int or str [N]; `labels[ids]` names what
      a search found.
    threshold: nearest distances above it classify as "unknown" (None:
      never unknown); set by `calibrate`, saved with the index.
    backend: one of `BACKENDS`.
    model: the `TrainedModel` that embeds images for `add`,
      `search_images` and `classify` (None for `from_embeddings`).
    fingerprint: the model's fingerprint, "" when none is known.
    budget_bytes: bounds the exact search's distance blocks.
  """

  embeddings: jax.Array
  labels: np.ndarray
  threshold: float | None = None
  backend: str = "exact"
  model: object = None
  fingerprint: str = ""
  budget_bytes: int = DEFAULT_BUDGET_BYTES

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise SearchIndexError(f"Unknown index backend {self.backend!r}; choose one of {BACKENDS}.")
    emb = np.asarray(self.embeddings, np.float32)
    labels = _labels(self.labels)
    if emb.ndim != 2 or len(emb) != len(labels) or len(emb) == 0:
      raise SearchIndexError(
        f"An index needs float[N, D] embeddings and N labels, N >= 1; got {emb.shape} "
        f"embeddings and {len(labels)} labels."
      )
    if not np.isfinite(emb).all():
      raise SearchIndexError("The embeddings hold NaN or infinite values; embed the gallery again.")
    # An array of its own on the device, copied once and at once: one aliasing the
    # caller's numpy memory is copied again by every jitted call that takes it, and
    # jnp.array(copy=True) passed through a second transient copy (docs/recognition.md).
    self.embeddings = jax.device_put(emb, may_alias=False).block_until_ready()
    self.labels = labels
    self._faiss = None

  @classmethod
  def from_embeddings(cls, embeddings, labels, **kwargs) -> "Index":
    """An index of embeddings made elsewhere (no model: search embeddings only)."""
    return cls(embeddings, labels, **kwargs)

  def __len__(self) -> int:
    return int(self.embeddings.shape[0])

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  def add(self, images, labels) -> "Index":
    """Enrols more images (embedded by the index's model), or embeddings [N, D]."""
    emb = self._embed(images, "add")
    labels = _labels(labels)
    if len(emb) != len(labels):
      raise SearchIndexError(f"add: {len(emb)} items but {len(labels)} labels.")
    if len(self.labels) and labels.dtype.kind != self.labels.dtype.kind:
      raise SearchIndexError(
        f"add: labels of kind {labels.dtype} for an index of {self.labels.dtype} labels; "
        "use one kind (all integers or all strings)."
      )
    self.embeddings = jnp.concatenate([self.embeddings, jnp.asarray(emb)])
    self.labels = np.concatenate([self.labels, labels])
    self._faiss = None
    return self

  def search(self, query_embeddings, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(distances float32[Q, k], ids int32[Q, k]) of each query's k nearest, nearest first."""
    q = np.asarray(query_embeddings, np.float32)
    if q.ndim != 2 or q.shape[1] != self.dim:
      raise SearchIndexError(f"search: expected query embeddings (Q, {self.dim}), got {q.shape}.")
    if not 1 <= k <= len(self):
      raise SearchIndexError(f"search: k={k} must lie in 1..{len(self)}, the gallery's size.")
    if self.backend == "exact":
      d, ids = nearest(q, self.embeddings, k, budget_bytes=self.budget_bytes)
      return np.asarray(d), np.asarray(ids)
    if self._faiss is None:
      self._faiss = _faiss_index(self.backend, np.asarray(self.embeddings))
    _, ids = self._faiss.search(q, k)
    ids = ids.astype(np.int32)
    if (ids < 0).any():
      raise SearchIndexError(f"{self.backend} found fewer than k={k} neighbours; lower k.")
    # The distances as the model's, whichever backend ranked them.
    return np.asarray(_distances(jnp.asarray(q), self.embeddings, jnp.asarray(ids))), ids

  def search_images(self, images, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`search` of images, embedded by the index's model first."""
    return self.search(self._embed(images, "search_images"), k)

  def classify(self, queries, k: int = 1, threshold: float | None = None) -> np.ndarray:
    """Each query's label, or "unknown" where its nearest distance exceeds the threshold.

    With k > 1 the k nearest vote: the most frequent label wins, a tie goes
    to the tied label whose nearest member is closest.

    Args:
      queries: images (embedded by the model) or embeddings [Q, D].
      k: neighbours that vote.
      threshold: overrides `self.threshold` (None: use it; if that is None
        too, nothing is unknown).

    Returns:
      object[Q]: labels, or the string "unknown".
    """
    d, ids = self.search(self._embed(queries, "classify"), k)
    labels = self.labels[ids]
    if k == 1:
      out = labels[:, 0].astype(object)
    else:
      out = np.empty(len(ids), object)
      for i, row in enumerate(labels):
        values, first, counts = np.unique(row, return_index=True, return_counts=True)
        best = np.flatnonzero(counts == counts.max())
        out[i] = values[best[np.argmin(first[best])]]  # ranks are nearest first
    limit = self.threshold if threshold is None else threshold
    if limit is not None:
      out[d[:, 0] > limit] = UNKNOWN
    return out

  def save(self, path) -> None:
    """Writes the index to `path` (an .npz, atomically; no pickle)."""
    buf = io.BytesIO()
    np.savez(
      buf,
      format=np.asarray(FORMAT),
      version=np.asarray(VERSION, np.int32),
      embeddings=np.asarray(self.embeddings),
      labels=self.labels,
      threshold=np.asarray(np.nan if self.threshold is None else self.threshold, np.float64),
      backend=np.asarray(self.backend),
      fingerprint=np.asarray(self.fingerprint),
    )
    atomic_write_bytes(path, buf.getvalue())

  def _embed(self, items, what: str) -> np.ndarray:
    x = np.asarray(items)
    if x.ndim == 2 and x.shape[1] == self.dim and np.issubdtype(x.dtype, np.floating):
      return x.astype(np.float32)
    if self.model is None:
      raise SearchIndexError(
        f"{what}: got {x.shape} {x.dtype} items, not embeddings (N, {self.dim}); this index "
        "has no model to embed images. Build it with load_trained(W).index(...), or pass "
        "embeddings."
      )
    return self.model.embed(x)


def _labels(labels) -> np.ndarray:
  y = np.asarray(labels)
  if y.ndim != 1 or y.dtype.kind not in "iuU":
    raise SearchIndexError(
      f"Labels must be a 1-D array of integers or strings, got {y.dtype} of shape {y.shape}."
    )
  return y.astype(np.int64) if y.dtype.kind in "iu" else y


def load_index(path, *, model=None) -> Index:
  """Reads an index written by `Index.save`.

  Args:
    path: the file.
    model: the `TrainedModel` to search images with; refused unless it is
      the model the index was built with.

  Raises:
    SearchIndexError: not an index file, another format version, or another model.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:
    raise SearchIndexError(f"{path}: not a readable index file ({e}). Build it again.") from None
  if fields.get("format", np.asarray("")).item() != FORMAT:
    raise SearchIndexError(f"{path}: not a siamese_jax index (no format tag). Build it again.")
  version = int(fields["version"])
  if version != VERSION:
    raise SearchIndexError(
      f"{path}: index format version {version}; this siamese_jax reads version {VERSION}. "
      "Build the index again with this version."
    )
  saved = str(fields["fingerprint"])
  if model is not None and saved and saved != model.fingerprint:
    raise SearchIndexError(
      f"{path} was built with another model (fingerprint {saved[:12]}, this one "
      f"{model.fingerprint[:12]}): its embeddings do not match this model's. Build the "
      "index again from the gallery with this model."
    )
  threshold = float(fields["threshold"])
  return Index(
    fields["embeddings"], fields["labels"], None if math.isnan(threshold) else threshold,
    str(fields["backend"]), model, saved,
  )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A chosen threshold and the curve it was chosen on.

  Attributes:
    threshold: nearest distances above it answer "unknown".
    target: "f1", or the precision asked for.
    f1, precision, recall: at the threshold; a query counts as a true
      positive when it is accepted and its label is right, a false positive
      when accepted and wrong (an unknown class is always wrong), a false
      negative when refused though its label would have been right.
    thresholds, precisions, recalls, f1s: the curve, one point per distinct
      nearest distance.
  """

  threshold: float
  target: str | float
  f1: float
  precision: float
  recall: float
  thresholds: np.ndarray
  precisions: np.ndarray
  recalls: np.ndarray
  f1s: np.ndarray


def calibrate(index: Index, queries, labels, *, target="f1") -> Calibration:
  """Picks the distance threshold on labelled held-out data; keeps it on the index.

  Args:
    index: the gallery.
    queries: held-out images (or embeddings); their classes may or may not
      be in the gallery.
    labels: their labels, of the gallery's kind.
    target: "f1" for the best F1 of "known and right" against "unknown",
      or a precision in (0, 1]: the largest threshold that reaches it (the
      most recall at that precision), as TensorFlow Similarity's calibrate.

  Returns:
    The `Calibration`; `index.threshold` is set to its threshold.

  Raises:
    SearchIndexError: no query, a bad target, or a precision no threshold reaches.
  """
  labels = _labels(labels)
  if len(labels) == 0:
    raise SearchIndexError("calibrate: no held-out queries; give labelled images to calibrate on.")
  if target != "f1" and not (isinstance(target, int | float) and 0 < target <= 1):
    raise SearchIndexError(
      f"calibrate: target must be 'f1' or a precision in (0, 1], got {target!r}."
    )
  d, ids = index.search(index._embed(queries, "calibrate"), 1)
  d, right = d[:, 0].astype(np.float64), index.labels[ids[:, 0]] == labels
  order = np.argsort(d, kind="stable")
  d, right = d[order], right[order]
  tp = np.cumsum(right)
  fp = np.cumsum(~right)
  last = np.r_[d[1:] != d[:-1], True]  # one point per distinct distance
  t, tp, fp = d[last], tp[last], fp[last]
  fn = right.sum() - tp
  precision = tp / (tp + fp)
  recall = tp / np.maximum(right.sum(), 1)
  f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
  if target == "f1":
    i = int(np.argmax(f1))  # the first maximum: the smallest threshold
  else:
    ok = np.flatnonzero(precision >= target)
    if not len(ok):
      raise SearchIndexError(
        f"calibrate: no threshold reaches precision {target} on these {len(labels)} queries "
        f"(the best is {precision.max():.3f}). Lower the target, or enrol more examples."
      )
    i = int(ok[-1])
  index.threshold = float(t[i])
  return Calibration(
    float(t[i]), target, float(f1[i]), float(precision[i]), float(recall[i]),
    t, precision, recall, f1,
  )  # fmt: skip


def fingerprint(params) -> str:
  """sha256 of a parameter tree's shapes and bytes: which model made embeddings."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    x = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.dtype}".encode())
    h.update(x.tobytes())
  return h.hexdigest()
