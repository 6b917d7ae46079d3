"""Pairs of example indices, and whether the two share a class (y = 1.0: same).

Pairs are indices gathered on the device (`gather_batch`): the original's
108,400 x 2 x 784 float32 pairs would take 680 MB. y = 1 means "same", as in
the Keras example; DrLIM (Hadsell, Chopra & LeCun, 2006) uses the reverse.
"""

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.core.streams import FreshPairsKey
from siamese_jax.losses.distances import pair_distances
from siamese_jax.sampling.feed import Feed
from siamese_jax.sampling.shuffle import epoch_batches


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"labels must be a 1-D integer array, got {labels.dtype}{labels.shape}.")
  if num_classes < 2:
    raise DataError(f"Pairs need at least 2 classes, got num_classes={num_classes}.")
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f"labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}.")
  counts = np.bincount(labels, minlength=num_classes)
  small = [c for c in range(num_classes) if counts[c] < 2]
  if small:
    raise DataError(
      f"Every class needs at least 2 examples to form a positive pair; "
      f"class(es) {small} have {[int(counts[c]) for c in small]}. Use a split "
      "that holds at least two examples of every class."
    )
  return labels


def make_pairs(
  key: jax.Array, labels: np.ndarray, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
  """The original example's `create_pairs`, with a JAX key for randomness.

  With n = (smallest class count) - 1, for each class d and i < n: a positive
  pair (i-th, (i+1)-th of d), then a negative (i-th of d, i-th of (d + k) % C,
  k uniform in 1..C-1). MNIST: 108,400 train and 17,820 test pairs.

  Returns:
    pairs: int32[P, 2] indices into `labels`, P = 2 * C * n.
    y: float32[P], alternating 1.0, 0.0.

  Raises:
    DataError: malformed labels or a class of fewer than 2 examples.
  """
  labels = _check_labels(labels, num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  n = int(counts.min()) - 1
  # The first n + 1 examples of each class, in split order: (C, n + 1).
  order = np.argsort(labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  by_class = order[starts[:, None] + np.arange(n + 1)[None, :]]

  inc = np.asarray(jax.random.randint(key, (num_classes, n), 1, num_classes))
  other = (np.arange(num_classes)[:, None] + inc) % num_classes  # (C, n)
  anchor = by_class[:, :n]
  positive = by_class[:, 1:]
  negative = by_class[other, np.arange(n)[None, :]]
  pairs = np.stack(
    [np.stack([anchor, positive], -1), np.stack([anchor, negative], -1)], axis=2
  )  # (C, n, 2 [pos, neg], 2 [first, second])
  y = np.broadcast_to(np.array([1.0, 0.0], np.float32), (num_classes, n, 2))
  return pairs.reshape(-1, 2).astype(np.int32), y.reshape(-1).copy()


def count_pairs(labels: np.ndarray, num_classes: int = 10) -> int:
  """How many pairs `make_pairs` makes of these labels: 2 * C * (min count - 1)."""
  counts = np.bincount(_check_labels(labels, num_classes), minlength=num_classes)
  return 2 * num_classes * (int(counts.min()) - 1)


def class_index(labels: np.ndarray, num_classes: int = 10, groups=None) -> dict[str, np.ndarray]:
  """Host-side tables for `sample_pairs`, validated once.

  Returns (order int32[N] examples by class, starts int32[C], counts
  int32[C]); with `groups` (int[N], e.g. alphabets) also group_order int32[C],
  group_starts, group_counts int32[G], class_group and class_rank int32[C].
  Raises DataError on malformed labels or a class in two groups.
  """
  labels = _check_labels(labels, num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  order = np.argsort(labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  index = {
    "order": order.astype(np.int32),
    "starts": starts.astype(np.int32),
    "counts": counts.astype(np.int32),
  }
  if groups is not None:
    groups = np.asarray(groups)
    class_group = groups[order[starts]]
    if not np.array_equal(groups, class_group[labels]):
      bad = int(labels[np.flatnonzero(groups != class_group[labels])[0]])
      raise DataError(
        f"Class {bad} has examples in several groups; a class must belong to one group "
        "(Omniglot: a character to one alphabet)."
      )
    _, dense = np.unique(class_group, return_inverse=True)
    group_order = np.argsort(dense, kind="stable")
    group_counts = np.bincount(dense)
    group_starts = np.concatenate([[0], np.cumsum(group_counts)[:-1]])
    class_rank = np.empty(num_classes, np.int64)
    class_rank[group_order] = np.arange(num_classes) - group_starts[dense[group_order]]
    index.update(
      group_order=group_order.astype(np.int32),
      group_starts=group_starts.astype(np.int32),
      group_counts=group_counts.astype(np.int32),
      class_group=dense.astype(np.int32),
      class_rank=class_rank.astype(np.int32),
    )
  return index


def sample_pairs(
  key: jax.Array,
  labels,
  num_pairs: int,
  num_classes: int = 10,
  *,
  index=None,
  negatives: str = "any",
) -> tuple[jax.Array, jax.Array]:
  """Fresh balanced pairs, jittable: even rows same class (never the anchor itself), odd different.

  The anchor's class is uniform, as in `make_pairs`, but anchors and partners
  are drawn anew for every key. `index` is `class_index(...)` (computed when
  None; needs the group tables unless `negatives` is "any"). `negatives`:
  "any" class; "within-group", the anchor's group's other classes; "mixed",
  every second negative (rows 1, 5, 9, ...) within the group.
  Returns (pairs int32[P, 2], y float32[P]).
  """
  if index is None:
    index = class_index(labels, num_classes)
  order = jnp.asarray(index["order"])
  starts = jnp.asarray(index["starts"])
  counts = jnp.asarray(index["counts"])
  k_cls, k_anchor, k_pos, k_inc, k_neg = jax.random.split(key, 5)
  cls = jax.random.randint(k_cls, (num_pairs,), 0, num_classes)
  a = jax.random.randint(k_anchor, (num_pairs,), 0, counts[cls])
  # Positive partner: uniform over the class minus the anchor.
  p = jax.random.randint(k_pos, (num_pairs,), 0, counts[cls] - 1)
  p = p + (p >= a)
  other = (cls + jax.random.randint(k_inc, (num_pairs,), 1, num_classes)) % num_classes
  if negatives != "any":
    # A key of its own, so that "any" draws exactly what it always drew.
    other = _within_group(
      jax.random.fold_in(key, FreshPairsKey.WITHIN_GROUP), cls, other, index, negatives
    )
  n = jax.random.randint(k_neg, (num_pairs,), 0, counts[other])
  is_pos = jnp.arange(num_pairs) % 2 == 0
  first = order[starts[cls] + a]
  second = jnp.where(is_pos, order[starts[cls] + p], order[starts[other] + n])
  pairs = jnp.stack([first, second], axis=1).astype(jnp.int32)
  return pairs, is_pos.astype(jnp.float32)


def _within_group(key, cls, other, index, negatives: str):
  """Replaces `other` by another class of `cls`'s group where `negatives` asks."""
  if "group_order" not in index:
    raise DataError(
      f"negatives={negatives!r} needs each example's group (Omniglot's alphabets); this "
      "data has none. Use --negatives any."
    )
  group = jnp.asarray(index["class_group"])[cls]
  size = jnp.asarray(index["group_counts"])[group]
  j = jax.random.randint(key, cls.shape, 0, jnp.maximum(size - 1, 1))
  j = j + (j >= jnp.asarray(index["class_rank"])[cls])  # skip the anchor's own class
  within = jnp.asarray(index["group_order"])[jnp.asarray(index["group_starts"])[group] + j]
  use = size >= 2
  if negatives == "mixed":
    use &= jnp.arange(cls.shape[0]) % 4 == 1
  return jnp.where(use, within, other)


def dense_labels(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """Class ids -> their positions 0..k-1 in the sorted `classes`."""
  return np.searchsorted(classes, labels).astype(np.int32)


def make_pairs_within(
  key: jax.Array, labels: np.ndarray, classes=None
) -> tuple[np.ndarray, np.ndarray]:
  """`make_pairs` over the examples of `classes` (all if None), renumbered 0..k-1.

  Returns indices into `labels`, not the subset; with every class present
  this is exactly `make_pairs(key, labels, C)`.
  """
  labels = np.asarray(labels)
  classes = np.unique(labels) if classes is None else np.asarray(sorted(classes))
  keep = np.flatnonzero(np.isin(labels, classes))
  pairs, y = make_pairs(key, dense_labels(labels[keep], classes), len(classes))
  return keep[pairs].astype(np.int32), y


def gather_batch(
  images: jax.Array, pairs: jax.Array, y: jax.Array, idx: jax.Array
) -> dict[str, jax.Array]:
  """A batch on the device: {"x1", "x2": float32[B, H, W] in [0, 1], "y": float32[B]}."""
  p = pairs[idx]
  # One gather for both images of every pair: on CPU, XLA turns two gathers
  # joined by a concatenate (which `Siamese` then undoes) into a slower loop
  # (docs/performance.md).
  x = images[jnp.concatenate([p[:, 0], p[:, 1]])].astype(jnp.float32) / 255.0
  b = idx.shape[0]
  return {"x1": x[:b], "x2": x[b:], "y": y[idx]}


def feed(config, run) -> Feed:
  """What the pairs sampler trains one model from (`siamese_jax.sampling.feed.Feed`).

  Fixed pairs are reshuffled each epoch; fresh pairs are drawn anew from the
  class index, an argument of the epoch so XLA embeds no table of images.
  """
  train, n, b = run.sets.train, run.per_epoch, config.batch_size
  if config.pairs == "fresh":
    k, negatives = len(train.classes), config.negatives

    def epoch(index, batch_key, pairs_key):
      pairs, y = sample_pairs(pairs_key, None, n, k, index=index, negatives=negatives)
      return {"pairs": pairs, "y": y}, epoch_batches(batch_key, n, b)

    tables = class_index(train.labels, k, train.groups)
    hint = ""
  else:

    def epoch(tables, batch_key, pairs_key):
      del pairs_key  # the pairs are fixed
      return tables, epoch_batches(batch_key, n, b)

    tables = {"pairs": train.pairs, "y": train.y}
    hint = " Use --pairs fresh (as many pairs for every seed), or run the seeds one by one."
  return Feed(train.images, tables, epoch, b, (n, b), f"{n:,} training pairs", hint)


def validation(config, split, key) -> tuple[dict, np.ndarray]:
  """The validation split's pairs, as one batch of every pair: (data, int32[1, P])."""
  del config, key  # the split's own fixed pairs, all of them
  return {"pairs": split.pairs, "y": split.y}, np.arange(len(split.y), dtype=np.int32)[None]


def val_outputs(embeddings: jax.Array, data: dict, idx: jax.Array):
  """(float[B] distances, float[B] labels) of the batch's pairs, from the split's embeddings."""
  return pair_distances(embeddings, data["pairs"][idx]), data["y"][idx]
