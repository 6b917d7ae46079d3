"""Pair metrics: measure a split's pairs, and judge a distance honestly.

On the device (jitted, without dropout; the images embedded once by
`siamese_jax.evaluation.embed`):

* `pair_distances`: distances of index pairs, gathered from embeddings
  (`siamese_jax.losses.distances`);
* `evaluate`: loss, accuracy and distances of a whole pair set.

On host arrays of distances `d` and labels `y` (1.0 = same class):

* `roc_auc`: the probability that a random positive pair is closer than a
  random negative pair (ties count one half) - no threshold at all;
* `best_threshold`: the threshold that maximizes accuracy on a *validation*
  set, to be applied unchanged to the test set.

The original reports one number: accuracy at the fixed threshold d < 0.5.
"""

from typing import Any

import jax
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.evaluation.embed import embed_images
from siamese_jax.losses import contrastive_loss, pair_accuracy
from siamese_jax.losses.distances import pair_distances


def _check(d: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  d = np.asarray(d, np.float64)
  y = np.asarray(y)
  if d.ndim != 1 or d.shape != y.shape:
    raise ValueError(f"d and y must be 1-D of the same length, got {d.shape} and {y.shape}.")
  return d, y == 1


def roc_auc(d: np.ndarray, y: np.ndarray) -> float:
  """Area under the ROC curve of "same digit" scored by -distance.

  Args:
    d: float[P] distances.
    y: float[P] labels, 1.0 = same digit.

  Returns:
    AUC in [0, 1]: 1.0 when every positive pair is closer than every
    negative one, 0.5 for a distance that carries no information.
  """
  d, pos = _check(d, y)
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError("roc_auc needs both positive and negative pairs.")
  # Mann-Whitney U with average ranks for ties, on the score -d.
  score = -d
  order = np.argsort(score, kind="mergesort")
  sorted_scores = score[order]
  ranks = np.empty(len(d), np.float64)
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
  ranks[order] = np.repeat(avg, counts)
  u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def accuracy_at(d: np.ndarray, y: np.ndarray, threshold: float) -> float:
  """mean((d < threshold) == y)."""
  d, pos = _check(d, y)
  return float(np.mean((d < threshold) == pos))


def best_threshold(d: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """The threshold that maximizes accuracy of `d < threshold` on (d, y).

  Candidates are midpoints between consecutive distinct distances (and
  points just outside the range); among equally good ones the smallest wins.

  Returns:
    (threshold, accuracy at it on these pairs).
  """
  d, pos = _check(d, y)
  values, inverse = np.unique(d, return_inverse=True)
  pos_at = np.bincount(inverse, weights=pos, minlength=len(values))
  neg_at = np.bincount(inverse, weights=~pos, minlength=len(values))
  # Threshold between values[k-1] and values[k]: predict "same" for the
  # first k distinct values. correct(k) = positives below + negatives at/above.
  pos_below = np.concatenate([[0.0], np.cumsum(pos_at)])
  neg_below = np.concatenate([[0.0], np.cumsum(neg_at)])
  correct = pos_below + (neg_below[-1] - neg_below)
  k = int(np.argmax(correct))
  if k == 0:
    t = values[0] - 1e-6
  elif k == len(values):
    t = values[-1] + 1e-6
  else:
    t = (values[k - 1] + values[k]) / 2.0
  return float(t), float(correct[k] / len(d))


def evaluate(
  state, images: jax.Array, pairs: jax.Array, y: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
  """Loss and accuracy over a whole pair set, without dropout.

  Each image is embedded once and the distances are taken between gathered
  embeddings: the same numbers as `eval_step` over every pair, in a fraction
  of the work (17,820 test pairs reference 10,000 images; without dropout an
  image's embedding does not depend on the pair it is in).

  Args:
    state: the TrainState.
    images: uint8[N, 28, 28] the split's images.
    pairs: int32[P, 2] indices into `images`.
    y: float32[P] labels, 1.0 = same digit.

  Returns:
    ({"loss": float32[], "accuracy": float32[]}, distances float32[P]).
  """
  return evaluate_embedded(state, embed_images(state, images), pairs, y)


@jax.jit
def evaluate_embedded(
  state, embeddings: jax.Array, pairs: jax.Array, y: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
  """`evaluate` from the split's embeddings float[N, D], already computed."""
  d = pair_distances(embeddings, pairs)
  metrics = {
    "loss": contrastive_loss(d, y, state.margin),
    "accuracy": pair_accuracy(d, y, state.threshold),
  }
  return metrics, d


def to_host_scalars(metrics: dict[str, Any]) -> dict[str, float]:
  """Device or numpy scalars -> plain floats, for JSON."""
  return {k: float(v) for k, v in parallel.to_host(metrics).items()}
