"""Calibration: the distance threshold above which a gallery answers "unknown".

    cal = calibrate(index, heldout_images, heldout_labels)   # best F1
    cal = calibrate(index, heldout_images, heldout_labels, target=0.99)   # a precision

Held-out classes may or may not be in the gallery; the threshold is kept
on the index and saved with it.
"""

import dataclasses

import numpy as np

from siamese_jax.recognition.index import Index, SearchIndexError, check_labels


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A chosen threshold, its target ("f1" or a precision), its scores, and its curve.

  A query is a true positive when accepted with the right label, a false
  positive when accepted and wrong (an unknown class always is), a false
  negative when refused though it would have been right.
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
  """Picks the threshold on labelled held-out queries and sets `index.threshold`.

  `target` is "f1" (best F1 of "known and right" against "unknown") or a
  precision in (0, 1]: the largest threshold reaching it, as TensorFlow
  Similarity's. Raises SearchIndexError: no query, a bad target, or a
  precision no threshold reaches.
  """
  labels = check_labels(labels)
  if len(labels) == 0:
    raise SearchIndexError("calibrate: no held-out queries; give labelled images to calibrate on.")
  if target != "f1" and not (isinstance(target, int | float) and 0 < target <= 1):
    raise SearchIndexError(
      f"calibrate: target must be 'f1' or a precision in (0, 1], got {target!r}."
    )
  d, ids = index.search(index.embeddings_of(queries, "calibrate"), 1)
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
