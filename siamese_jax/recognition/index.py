"""A gallery index: exact nearest neighbours, "unknown" as an answer, saving and loading.

    model = sj.load_trained(workdir)
    index = model.index(gallery_images, gallery_labels)   # an Index
    index.search_images(query_images, k=5)                # (distances, ids), [Q, k] each
    index.classify(query_images, threshold=0.6)           # labels, or "unknown"
    sj.calibrate(index, heldout_images, heldout_labels)   # picks and keeps a threshold
    index.save("gallery.index"); sj.load_index("gallery.index", model=model)

`Index.from_embeddings` takes embeddings made elsewhere; labels are ints or
strings. The exact search is `siamese_jax.losses.distances.nearest`, as for
the retrieval metrics. With the `[faiss]` extra, `backend="faiss-flat"`
(exact), `"faiss-hnsw"` or `"faiss-ivf"` (approximate) search behind the
same API; nothing else imports faiss. An index file is an `.npz` read
without pickle (it may come from someone else): embeddings, labels,
threshold, format version and the model's fingerprint, which must match.
"""

import dataclasses
import hashlib
import io
import math
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core.errors import SiameseJaxError
from siamese_jax.core.files import atomic_write_bytes
from siamese_jax.losses.distances import DEFAULT_BUDGET_BYTES, found_distances, nearest

UNKNOWN = "unknown"
BACKENDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
FORMAT = "siamese_jax.index"  # the file format's tag, unchanged since it was written
VERSION = 1


class SearchIndexError(SiameseJaxError):
  """An index that cannot be built, searched, read or used with this model."""


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
  """A gallery of embeddings and int or str [N] labels, searched exactly (or by faiss).

  `threshold`: nearest distances above it are "unknown" (None: never), set by
  `calibrate` and saved. `model` embeds images (None for `from_embeddings`);
  `fingerprint` is its ("" if unknown); `budget_bytes` bounds the search.
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
    labels = check_labels(self.labels)
    if emb.ndim != 2 or len(emb) != len(labels) or len(emb) == 0:
      raise SearchIndexError(
        f"An index needs float[N, D] embeddings and N labels, N >= 1; got {emb.shape} "
        f"embeddings and {len(labels)} labels."
      )
    if not np.isfinite(emb).all():
      raise SearchIndexError("The embeddings hold NaN or infinite values; embed the gallery again.")
    if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
      # As --threshold refuses it: with it every query would be "unknown" (or none).
      raise SearchIndexError(
        f"An index's threshold must be a distance > 0 (or None), got {self.threshold}."
      )
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
    emb = self.embeddings_of(images, "add")
    labels = check_labels(labels)
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
    if q.ndim == 2 and q.shape[1] != self.dim:
      raise SearchIndexError(
        f"search: the queries are {q.shape[1]}-wide embeddings, but this index holds "
        f"{self.dim}-wide ones: it was built with another model (or from other embeddings). "
        "Build the index again with the model that embeds the queries."
      )
    if q.ndim != 2:
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
    return np.asarray(found_distances(jnp.asarray(q), self.embeddings, jnp.asarray(ids))), ids

  def search_images(self, images, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`search` of images, embedded by the index's model first."""
    return self.search(self.embeddings_of(images, "search_images"), k)

  def classify(self, queries, k: int = 1, threshold: float | None = None) -> np.ndarray:
    """object[Q]: each query's label, or "unknown" where its nearest distance exceeds the threshold.

    `queries` are images or embeddings [Q, D]. With k > 1 the k nearest vote;
    a tie goes to the tied label whose nearest member is closest. `threshold`
    overrides the index's (if both are None nothing is unknown).
    """
    d, ids = self.search(self.embeddings_of(queries, "classify"), k)
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
    fix = "Free space on that disk (or fix its permissions), or choose another path to save to."
    atomic_write_bytes(path, buf.getvalue(), fix=fix)

  def embeddings_of(self, items, what: str) -> np.ndarray:
    """float32[N, D]: embeddings as they are, images embedded by the model."""
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


def check_labels(labels) -> np.ndarray:
  """int64 or str [N] labels, or SearchIndexError."""
  y = np.asarray(labels)
  if y.ndim != 1 or y.dtype.kind not in "iuU":
    raise SearchIndexError(
      f"Labels must be a 1-D array of integers or strings, got {y.dtype} of shape {y.shape}."
    )
  return y.astype(np.int64) if y.dtype.kind in "iu" else y


def load_index(path, *, model=None) -> Index:
  """Reads an index written by `Index.save`; `model` must be the one that built it.

  Raises SearchIndexError: not an index file, another format, or another model.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise SearchIndexError(
      f"{path}: not a readable index file ({e or type(e).__name__}). It is corrupt or cut "
      "short: build it again (--save-index)."
    ) from None
  if fields.get("format", np.asarray("")).item() != FORMAT:
    raise SearchIndexError(f"{path}: not a siamese_jax index (no format tag). Build it again.")
  missing = [k for k in ("version", "embeddings", "labels", "threshold", "backend",
                         "fingerprint") if k not in fields]  # fmt: skip
  if missing:
    raise SearchIndexError(
      f"{path}: an index file without {', '.join(missing)}: it is corrupt. Build it again."
    )
  try:
    version, threshold = int(fields["version"]), float(fields["threshold"])
  except (TypeError, ValueError):
    raise SearchIndexError(
      f"{path}: its version ({fields['version']!r}) or threshold ({fields['threshold']!r}) is "
      "not a number: the file is corrupt. Build the index again (--save-index)."
    ) from None
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
  if not math.isnan(threshold) and not (math.isfinite(threshold) and threshold > 0):
    # NaN is how an index without a threshold is saved; anything else must be a distance.
    raise SearchIndexError(
      f"{path}: its saved threshold {threshold} is not a distance > 0, so every query would "
      "be judged against it wrongly: the file is corrupt or edited. Build the index again, "
      "or pass --threshold."
    )
  return Index(
    fields["embeddings"], fields["labels"], None if math.isnan(threshold) else threshold,
    str(fields["backend"]), model, saved,
  )  # fmt: skip


def fingerprint(params) -> str:
  """sha256 of a parameter tree's shapes and bytes: which model made embeddings."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    x = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.dtype}".encode())
    h.update(x.tobytes())
  return h.hexdigest()
