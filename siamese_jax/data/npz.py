"""Keras-style .npz files: `x_train`, `y_train`, `x_test`, `y_test`.

This is what `keras.datasets.mnist.load_data()` caches as `mnist.npz` (and
`fashion_mnist`'s loaders write in the same layout), so many users already
have one. Images must be uint8 (N, H, W); labels integer (N,) or (N, 1).
"""

import os
import zipfile

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import Dataset

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike) -> Dataset:
  """Loads a dataset from a Keras-style .npz file.

  Raises:
    DataError: naming the file, if it is unreadable, lacks a key, or holds
      arrays of the wrong kind.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in KEYS if k not in z.files]
      if missing:
        raise DataError(
          f"{path}: lacks {', '.join(missing)}; a Keras-style .npz holds x_train, "
          f"y_train, x_test and y_test (it holds {', '.join(z.files) or 'nothing'})."
        )
      arrays = {k: z[k] for k in KEYS}
  except DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(
      f"{path}: cannot be read as an .npz file ({e}). Replace it with an intact copy, "
      "for example the mnist.npz that keras.datasets.mnist.load_data() caches."
    ) from None
  for k in ("y_train", "y_test"):
    y = arrays[k]
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1), as CIFAR's loaders give.
      arrays[k] = y[:, 0]
  try:
    return Dataset(
      arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source=path
    )
  except DataError as e:
    raise DataError(f"{e} (x_* are the images, y_* the labels.)") from None
