"""A run's keys and splits: which images train, validate and test, and their pairs.

Keys: one root key from the config's seed, split once into named keys (init,
pairs, data, dropout). The pairs key fixes the holdout and every split's
pairs; the data key shuffles each epoch (`fold_in(data_key, epoch)`); the
dropout key is folded with the step inside `train_step`.
"""

import dataclasses

import jax
import numpy as np

from siamese_jax.dataset import MnistData
from siamese_jax.errors import ConfigError, DataError
from siamese_jax.pairs import make_pairs


@dataclasses.dataclass(frozen=True)
class RunKeys:
  init: jax.Array
  pairs: jax.Array
  data: jax.Array
  dropout: jax.Array


def run_keys(seed: int) -> RunKeys:
  """Splits the root key of `seed` once into the run's named keys."""
  return RunKeys(*jax.random.split(jax.random.key(seed), 4))


@dataclasses.dataclass(frozen=True)
class PairSet:
  """One split's images (host, uint8) and its fixed pairs."""

  images: np.ndarray  # uint8[N, 28, 28]
  labels: np.ndarray  # uint8[N]
  pairs: np.ndarray  # int32[P, 2] indices into `images`
  y: np.ndarray  # float32[P], 1.0 = same digit


@dataclasses.dataclass(frozen=True)
class PairSets:
  """The run's splits: train, test, and the optional held-out validation."""

  train: PairSet
  test: PairSet
  val: PairSet | None


def make_pair_sets(keys: RunKeys, data: MnistData, holdout: int = 0) -> PairSets:
  """The original's pairs of each split, after holding out validation images.

  With `holdout` > 0, that many training images (chosen by the pairs key)
  form the validation split; both parts keep the split's order, which the
  original's pairing (i-th with (i+1)-th image of a digit) depends on.

  Raises:
    ConfigError: if the holdout leaves a split without 2 images of a digit.
  """
  images, labels = data.train_images, data.train_labels
  val = None
  if holdout:
    n = len(labels)
    if holdout >= n:
      raise ConfigError(f"holdout={holdout} must be smaller than the {n} training images.")
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(keys.pairs, 2), n))
    val_idx, train_idx = np.sort(perm[:holdout]), np.sort(perm[holdout:])
    try:
      vp, vy = make_pairs(jax.random.fold_in(keys.pairs, 3), labels[val_idx])
    except DataError as e:
      raise ConfigError(f"holdout={holdout} is too small for validation pairs: {e}") from None
    val = PairSet(images[val_idx], labels[val_idx], vp, vy)
    images, labels = images[train_idx], labels[train_idx]
  try:
    tp, ty = make_pairs(jax.random.fold_in(keys.pairs, 0), labels)
  except DataError as e:
    if not holdout:
      raise
    raise ConfigError(f"holdout={holdout} leaves too few training images: {e}") from None
  ep, ey = make_pairs(jax.random.fold_in(keys.pairs, 1), data.test_labels)
  return PairSets(
    PairSet(images, labels, tp, ty), PairSet(data.test_images, data.test_labels, ep, ey), val
  )
