"""What a dataset is here: two splits of uint8 images and integer labels.

Every source (`siamese_jax.idx`, `siamese_jax.tfds_mnist`, ...) returns a
`MnistData`; this module imports none of them, so the sources depend on it
and never on each other.

Images stay uint8 (47 MB for MNIST's training split instead of 188 MB as
float32); they are scaled to [0, 1] on the device when a batch is gathered.
"""

import dataclasses

import numpy as np

from siamese_jax.errors import DataError

DATA_DIR_ENV = "SIAMESE_JAX_DATA_DIR"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class MnistData:
  """MNIST's two splits as host arrays.

  Attributes:
    train_images: uint8[N_train, 28, 28], pixel values 0..255.
    train_labels: uint8[N_train], digits 0..9.
    test_images: uint8[N_test, 28, 28].
    test_labels: uint8[N_test].
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  def __post_init__(self):
    validate_split(self.train_images, self.train_labels, "train")
    validate_split(self.test_images, self.test_labels, "test")


def validate_split(images: np.ndarray, labels: np.ndarray, name: str) -> None:
  """Checks shapes, dtypes, count agreement and label range of one split.

  Raises:
    DataError: naming the split and what is wrong with it.
  """
  fix = "Check that the MNIST files are intact and belong together."
  if images.dtype != np.uint8 or labels.dtype != np.uint8:
    raise DataError(
      f"{name} split: expected uint8 images and labels, got {images.dtype} and "
      f"{labels.dtype}. {fix}"
    )
  if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f"{name} images: expected shape (N, 28, 28), got {images.shape}. {fix}")
  if labels.ndim != 1:
    raise DataError(f"{name} labels: expected shape (N,), got {labels.shape}. {fix}")
  if len(images) != len(labels):
    raise DataError(f"{name} split: {len(images)} images but {len(labels)} labels. {fix}")
  if len(labels) == 0:
    raise DataError(f"{name} split: no examples. {fix}")
  if labels.max() >= NUM_CLASSES:
    raise DataError(
      f"{name} labels: found label {int(labels.max())}, but MNIST labels are 0..9. {fix}"
    )
