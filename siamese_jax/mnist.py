"""MNIST as numpy arrays, from a directory of IDX files or through tfds.

Two sources, one result (`MnistData`, uint8 images and labels):

* A directory holding the four IDX files as LeCun published them, gzipped or
  not (`train-images-idx3-ubyte[.gz]`, ...), chosen with `data_dir=` or the
  `SIAMESE_JAX_DATA_DIR` environment variable. Works offline.
* Otherwise tensorflow-datasets, through the TF-free builder in
  `siamese_jax.tfds_mnist`, which downloads the official files with tfds'
  checksum verification. Its decoded arrays are cached next to the prepared
  dataset, so only the first load decodes 70,000 PNGs.

Images stay uint8 here (47 MB for the training split instead of 188 MB as
float32); they are scaled to [0, 1] on the device when a batch is gathered.
"""

import os

from siamese_jax import idx
from siamese_jax.dataset import DATA_DIR_ENV, NUM_CLASSES, MnistData, validate_split
from siamese_jax.errors import DataError

__all__ = [
  "DATA_DIR_ENV",
  "MnistData",
  "load_mnist",
  "load_mnist_idx",
  "validate_split",
]


# Split part -> IDX base name. The reader accepts each with or without `.gz`.
IDX_FILES = {
  "train_images": "train-images-idx3-ubyte",
  "train_labels": "train-labels-idx1-ubyte",
  "test_images": "t10k-images-idx3-ubyte",
  "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx_file(data_dir: str, base: str) -> str | None:
  for candidate in (base + ".gz", base):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def load_mnist_idx(data_dir: str | os.PathLike) -> MnistData:
  """Loads MNIST from a directory holding the four IDX files.

  Args:
    data_dir: a directory with `train-images-idx3-ubyte[.gz]`,
      `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]` and
      `t10k-labels-idx1-ubyte[.gz]`.

  Returns:
    The validated `MnistData`.

  Raises:
    DataError: the directory or some files are missing, or a file is corrupt.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(
      f"MNIST data dir {data_dir!r} does not exist or is not a directory. Pass "
      f"--data-dir (or set {DATA_DIR_ENV}) to a directory holding the four "
      "MNIST IDX files."
    )
  paths = {part: _find_idx_file(data_dir, base) for part, base in IDX_FILES.items()}
  missing = [IDX_FILES[part] + "[.gz]" for part, p in paths.items() if p is None]
  if missing:
    raise DataError(
      f"MNIST data dir {data_dir!r} lacks {', '.join(missing)}. Put all four "
      "IDX files there (gzipped or not, named as LeCun published them), or "
      "point --data-dir elsewhere."
    )
  arrays = {part: idx.read_idx(path) for part, path in paths.items()}
  for part, path in paths.items():
    want_ndim = 3 if part.endswith("images") else 1
    if arrays[part].ndim != want_ndim:
      raise DataError(
        f"{path}: holds a {arrays[part].ndim}-D array, expected {want_ndim}-D "
        f"{part.replace('_', ' ')}. Are the files swapped or renamed?"
      )
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if len(images) != len(labels):
      raise DataError(
        f"{paths[f'{split}_images']} holds {len(images)} images but "
        f"{paths[f'{split}_labels']} holds {len(labels)} labels. The files do "
        "not belong together: replace them with matching official files."
      )
    if len(labels) and labels.max() >= NUM_CLASSES:
      raise DataError(
        f"{paths[f'{split}_labels']}: found label {int(labels.max())}, but "
        "MNIST labels are 0..9. Replace the file with an intact official copy."
      )
  return MnistData(**arrays)


def load_mnist(
  data_dir: str | os.PathLike | None = None,
  *,
  tfds_data_dir: str | os.PathLike | None = None,
) -> MnistData:
  """Loads MNIST from `data_dir`, `$SIAMESE_JAX_DATA_DIR`, or tfds.

  Args:
    data_dir: a directory of the four IDX files. If None, the environment
      variable `SIAMESE_JAX_DATA_DIR` is used; if that is unset too, MNIST
      comes from tensorflow-datasets (downloaded once, checksum-verified).
    tfds_data_dir: where tfds keeps its datasets (tfds' default if None).

  Returns:
    `MnistData` with uint8 images (N, 28, 28) and labels (N,).

  Raises:
    DataError: with the problem and the fix, for missing or corrupt data or
      when the download is impossible.
  """
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is not None:
    return load_mnist_idx(data_dir)
  from siamese_jax import tfds_mnist  # Imported lazily: tfds is slow to import.

  return tfds_mnist.load(data_dir=tfds_data_dir)
