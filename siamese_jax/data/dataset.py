"""What a dataset is here: two splits of uint8 images and integer labels.

Every source returns a `Dataset` and this module imports none of them.
Images stay uint8 (47 MB for MNIST's training split, not 188 MB) until a
batch is gathered on the device; labels are int32 0..C-1, and C and the
image size are read from the data.
"""

import dataclasses
import hashlib

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.core.integers import label_problem

DATA_DIR_ENV = "SIAMESE_JAX_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's two splits as host arrays: uint8[N, H, W] images, int32[N] labels 0..C-1.

  `*_groups` (Omniglot's alphabets) serve within-group negatives and
  episodes; `*_drawers` (its 20 drawers) keep an episode's support and
  queries apart; `group_names` names the groups; `val_groups`, the training
  groups a published split names for validation (`--holdout-groups` then
  holds out those); `source` is for messages.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  source: str = "arrays"
  train_groups: np.ndarray | None = None
  test_groups: np.ndarray | None = None
  train_drawers: np.ndarray | None = None
  test_drawers: np.ndarray | None = None
  group_names: tuple[str, ...] | None = None
  val_groups: tuple[int, ...] | None = None

  def __post_init__(self):
    for split in ("train", "test"):
      labels = getattr(self, f"{split}_labels")
      validate_split(getattr(self, f"{split}_images"), labels, split, self.source)
      object.__setattr__(self, f"{split}_labels", np.asarray(labels, np.int32))
      for kind in ("groups", "drawers"):
        name = f"{split}_{kind}"
        values = getattr(self, name)
        if values is None:
          continue
        values = np.asarray(values)
        if values.shape != labels.shape or not np.issubdtype(values.dtype, np.integer):
          raise DataError(
            f"{self.source}: {name} must be integers, one per {split} image "
            f"({len(labels)}), got {values.dtype}{values.shape}."
          )
        object.__setattr__(self, name, values.astype(np.int32))
    if self.val_groups is not None and (
      self.train_groups is None or not np.isin(self.val_groups, self.train_groups).all()
    ):
      raise DataError(
        f"{self.source}: val_groups {self.val_groups} must be groups of the training split."
      )
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise DataError(
        f"{self.source}: train images are {self.train_images.shape[1:]} but test images "
        f"are {self.test_images.shape[1:]}; both splits need one image size."
      )
    counts = np.bincount(self.train_labels)
    present = np.flatnonzero(counts)
    small = [int(c) for c in present if counts[c] < 2]
    if len(present) < 2 or small:
      raise DataError(
        f"{self.source}: pairs need at least 2 classes in the training split and at "
        f"least 2 training images of each; found {len(present)} class(es), and "
        f"class(es) {small} with a single image. Add images, or drop those classes."
      )

  @property
  def num_classes(self) -> int:
    """C: one more than the largest label of either split (a split may lack classes)."""
    return int(max(self.train_labels.max(), self.test_labels.max())) + 1

  def fingerprint(self) -> str:
    """Both splits' shapes, the classes and a sha256 of the arrays: where it lies is not in it."""
    h = hashlib.sha256()
    for name in ("train_images", "train_labels", "test_images", "test_labels", "train_groups",
                 "test_groups", "train_drawers", "test_drawers"):  # fmt: skip
      x = getattr(self, name)
      if x is not None:
        h.update(f"{name}{x.shape}{x.dtype}".encode())
        h.update(np.ascontiguousarray(x).data)
    train, test = self.train_images.shape, self.test_images.shape
    return (
      f"train {'x'.join(map(str, train))}, test {'x'.join(map(str, test))}, "
      f"{self.num_classes} classes, sha256 {h.hexdigest()[:16]}"
    )

  @property
  def image_shape(self) -> tuple[int, int]:
    """(H, W) of every image."""
    return tuple(self.train_images.shape[1:])


def validate_split(images: np.ndarray, labels: np.ndarray, name: str, source: str = "") -> None:
  """DataError naming the source and split for bad shapes, dtypes, counts or labels."""
  where = f"{source}: " if source else ""
  fix = "Check that the files are intact and belong together."
  if images.dtype != np.uint8:
    raise DataError(
      f"{where}{name} images: expected uint8 pixels 0..255, got {images.dtype}. "
      "Convert them with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]."
    )
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}{name} labels: expected integers, got {labels.dtype}. {fix}")
  if images.ndim != 3 or min(images.shape[1:], default=0) < 1:
    raise DataError(
      f"{where}{name} images: expected shape (N, H, W) of grayscale images, got "
      f"{images.shape}. {fix}"
    )
  if labels.ndim != 1:
    raise DataError(f"{where}{name} labels: expected shape (N,), got {labels.shape}. {fix}")
  if len(images) != len(labels):
    raise DataError(f"{where}{name} split: {len(images)} images but {len(labels)} labels. {fix}")
  if len(labels) == 0:
    raise DataError(f"{where}{name} split: no examples. {fix}")
  problem = label_problem(labels)  # before any cast: 2^32 + 1 must not wrap into class 1
  if problem is not None:
    raise DataError(f"{where}{name} labels: {problem}.")
