"""Pair metrics: measure a split's pairs, and judge a distance honestly.

On the device: `evaluate`, the loss, accuracy and distances of a pair set,
each image embedded once. On host distances `d` and labels `y`: `roc_auc`
(the chance a random positive pair is closer than a random negative, ties
half: no threshold), and `best_threshold`, chosen on validation pairs and
applied unchanged to the test set. The original reports only accuracy at
the fixed d < 0.5.
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
  """ROC AUC of "same class" scored by -d, float[P] d and y: 1.0 perfect, 0.5 uninformative."""
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
  """(threshold, accuracy) best for `d < threshold`: the smallest best midpoint of distances."""
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
  """({"loss", "accuracy"}, float32[P] distances) of int32[P, 2] pairs, without dropout.

  `eval_step`'s numbers over every pair, each image embedded once (17,820
  test pairs reference 10,000 images).
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
