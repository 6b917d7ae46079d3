"""A run's keys and splits: which images train, validate and test, and their pairs.

One root key from the seed, split once into named keys: the pairs key fixes
the holdout and every split's pairs, the data key each epoch's shuffle
(`fold_in(data_key, epoch)`), the dropout key is folded with the step.
`check_data` makes this for one model and checks the config against it.
"""

import dataclasses

import jax
import numpy as np

from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError, DataError
from siamese_jax.core.streams import HELDOUT_GROUPS_SEED, PairsKey
from siamese_jax.data.dataset import Dataset
from siamese_jax.sampling import sampler_name
from siamese_jax.sampling.pairs import count_pairs, dense_labels, make_pairs, make_pairs_within
from siamese_jax.sampling.pk import PKPool, classes_per_batch, make_pool
from siamese_jax.sampling.shuffle import steps_per_epoch


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
  """One split's uint8 images and fixed pairs; `labels` are positions 0..k-1 into `classes`."""

  images: np.ndarray  # uint8[N, H, W]
  labels: np.ndarray  # int32[N] in 0..k-1
  pairs: np.ndarray  # int32[P, 2] indices into `images`
  y: np.ndarray  # float32[P], 1.0 = same class
  classes: np.ndarray  # int32[k] the class ids behind labels 0..k-1
  groups: np.ndarray | None = None  # int32[N] each image's group (Omniglot: alphabet)
  drawers: np.ndarray | None = None  # int32[N] who drew each image


@dataclasses.dataclass(frozen=True)
class PairSets:
  """The splits (train, test, optional validation); `fresh_pairs`: how many a fresh epoch draws."""

  train: PairSet
  test: PairSet
  val: PairSet | None
  fresh_pairs: int


def training_classes(data: Dataset, train_classes) -> np.ndarray:
  """The classes to train on; ConfigError for a class without training images."""
  present = np.unique(data.train_labels)
  if train_classes is None:
    return present
  classes = np.asarray(sorted(train_classes), np.int32)
  absent = [int(c) for c in classes if c not in present]
  if absent:
    raise ConfigError(
      f"train_classes={','.join(map(str, classes))}: class(es) {absent} have no training "
      f"images; the training split holds classes {','.join(map(str, present))}. Fix "
      "--train-classes."
    )
  return classes


def _take(values, idx):
  return None if values is None else values[idx]


def heldout_groups(groups: np.ndarray, count: int, published=None) -> np.ndarray:
  """The `count` training groups held out for validation, by a fixed key so every seed shares them.

  `published`: the groups the data's own split validates on (`Dataset.val_groups`), held
  out instead. Raises ConfigError: no groups, too few to leave two for training, or a
  count other than the published groups'.
  """
  if groups is None:
    raise ConfigError(
      f"holdout_groups={count} needs each training image's group (Omniglot's alphabets); "
      "this data has none. Use --holdout to hold out images instead."
    )
  if published is not None:
    if count != len(published):
      raise ConfigError(
        f"holdout_groups={count}: this split publishes its validation classes, "
        f"{len(published)} groups. Use --holdout-groups {len(published)} to validate on "
        "them, or 0 to train on every training class."
      )
    return np.sort(np.asarray(published, np.int32))
  present = np.unique(groups)
  if count > len(present) - 2:
    raise ConfigError(
      f"holdout_groups={count}: the training split has {len(present)} groups, and at least "
      f"2 must stay for training. Use --holdout-groups {max(len(present) - 2, 0)} or fewer."
    )
  perm = np.asarray(jax.random.permutation(jax.random.key(HELDOUT_GROUPS_SEED), len(present)))
  return np.sort(present[perm[:count]])


def make_pair_sets(
  keys: RunKeys, data: Dataset, holdout: int = 0, train_classes=None, holdout_groups: int = 0
) -> PairSets:
  """The original's pairs of each split, after holding out validation images.

  `train_classes` first keeps only those classes. `holdout` images (chosen
  by the pairs key), or whole `holdout_groups`, form validation; every part
  keeps its order, which the pairing depends on. The test split keeps every
  class. Raises ConfigError for unknown classes or a split left without 2
  images of a class.
  """
  classes = training_classes(data, train_classes)
  images, labels = data.train_images, data.train_labels
  groups, drawers = data.train_groups, data.train_drawers
  if train_classes is not None:
    keep = np.isin(labels, classes)
    images, labels, groups, drawers = (
      images[keep],
      labels[keep],
      _take(groups, keep),
      _take(drawers, keep),
    )
  val = None
  if holdout_groups:
    out = np.isin(groups, heldout_groups(groups, holdout_groups, data.val_groups))
    vclasses = np.unique(labels[out])
    vlabels = dense_labels(labels[out], vclasses)
    vp, vy = make_pairs(jax.random.fold_in(keys.pairs, PairsKey.VAL_PAIRS), vlabels, len(vclasses))
    val = PairSet(images[out], vlabels, vp, vy, vclasses, groups[out], _take(drawers, out))
    keep = ~out
    images, labels, groups, drawers = images[keep], labels[keep], groups[keep], _take(drawers, keep)
    classes = np.unique(labels)
  labels = dense_labels(labels, classes)
  k = len(classes)
  fresh_pairs = count_pairs(labels, k)
  if holdout:
    n = len(labels)
    if holdout >= n:
      raise ConfigError(f"holdout={holdout} must be smaller than the {n} training images.")
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(keys.pairs, PairsKey.HOLDOUT), n))
    val_idx, train_idx = np.sort(perm[:holdout]), np.sort(perm[holdout:])
    try:
      vp, vy = make_pairs(jax.random.fold_in(keys.pairs, PairsKey.VAL_PAIRS), labels[val_idx], k)
    except DataError as e:
      raise ConfigError(f"holdout={holdout} is too small for validation pairs: {e}") from None
    val = PairSet(
      images[val_idx], labels[val_idx], vp, vy, classes, _take(groups, val_idx),
      _take(drawers, val_idx),
    )  # fmt: skip
    images, labels = images[train_idx], labels[train_idx]
    groups, drawers = _take(groups, train_idx), _take(drawers, train_idx)
  try:
    tp, ty = make_pairs(jax.random.fold_in(keys.pairs, PairsKey.TRAIN_PAIRS), labels, k)
  except DataError as e:
    if not holdout:
      raise
    raise ConfigError(f"holdout={holdout} leaves too few training images: {e}") from None
  test_classes = np.unique(data.test_labels)
  ep, ey = make_pairs_within(jax.random.fold_in(keys.pairs, PairsKey.TEST_PAIRS), data.test_labels)
  test = PairSet(
    data.test_images, dense_labels(data.test_labels, test_classes), ep, ey, test_classes,
    data.test_groups, data.test_drawers,
  )  # fmt: skip
  train = PairSet(images, labels, tp, ty, classes, groups, drawers)
  return PairSets(train, test, val, fresh_pairs)


@dataclasses.dataclass(frozen=True)
class RunData:
  """One model's data, checked, on the host.

  `per_epoch` counts the rows an epoch trains on (`Sampler.rows`: pairs or
  images); `pool` is what P x K batches draw from (None with pairs).
  """

  keys: RunKeys
  sets: PairSets
  per_epoch: int
  steps: int
  num_classes: int
  pool: PKPool | None = None

  @property
  def monitor(self) -> PairSet:
    """The per-epoch validation split: held-out images, else (as the original) test."""
    return self.sets.val if self.sets.val is not None else self.sets.test


def check_data(config: Config, data: Dataset) -> RunData:
  """One model's keys and splits, the config checked against them before anything is written."""
  keys = run_keys(config.seed)
  sets = make_pair_sets(keys, data, config.holdout, config.train_classes, config.holdout_groups)
  if config.negatives != "any" and sets.train.groups is None:
    raise ConfigError(
      f"negatives={config.negatives!r} draws negatives within each example's group "
      "(Omniglot's alphabets); this data has no groups. Use --negatives any."
    )
  if sampler_name(config) == "pk":
    train = sets.train
    pool = make_pool(
      train.images, train.labels, train.groups, classes_per_batch(config),
      config.samples_per_class, group_batches=config.group_batches, rotations=config.rotations,
    )  # fmt: skip
    return RunData(keys, sets, pool.plan.images_per_epoch, pool.plan.steps, data.num_classes, pool)
  # Pairs per epoch: the fixed pairs, or as many fresh ones as the original
  # makes of the whole training split (108,400 on MNIST, holdout or not).
  num_pairs = sets.fresh_pairs if config.pairs == "fresh" else len(sets.train.pairs)
  steps = steps_per_epoch(num_pairs, config.batch_size)
  return RunData(keys, sets, num_pairs, steps, data.num_classes)
