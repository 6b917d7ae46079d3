"""Where a run's data comes from: `load_data(data_dir, tfds_name=...)` -> `Dataset`.

Sources: a directory of MNIST-format IDX files (MNIST, Fashion-MNIST,
KMNIST; offline); an Omniglot folder (background alphabets train,
evaluation alphabets test, or with `split="vinyals"` the pooled split of
`siamese_jax.data.vinyals`); a Keras-style `.npz`; else tensorflow-datasets
without TensorFlow, downloaded once, checksum-verified and cached decoded.
`data_dir` falls back to `$SIAMESE_JAX_DATA_DIR`; only with neither does
tfds come in.
"""

import os

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset
from siamese_jax.data.idx import load_idx_dir
from siamese_jax.data.npz import load_npz
from siamese_jax.data.omniglot import is_omniglot_dir, load_omniglot
from siamese_jax.data.vinyals import load_vinyals

__all__ = ["DATA_DIR_ENV", "Dataset", "TFDS_NAMES", "data_source", "load_data", "load_recorded"]

TFDS_NAMES = ("mnist", "fashion_mnist", "kmnist")
SPLITS = ("lake", "vinyals")  # Omniglot's: by alphabet (Lake et al.), or pooled (Vinyals et al.)


def load_data(
  data_dir: str | os.PathLike | None = None,
  *,
  tfds_name: str = "mnist",
  tfds_data_dir: str | os.PathLike | None = None,
  progress: bool = True,
  split: str = "lake",
) -> Dataset:
  """A `Dataset` from `data_dir`, else `$SIAMESE_JAX_DATA_DIR`, else tfds.

  `data_dir` is an IDX directory, an Omniglot folder or an .npz; `split`
  (one of `SPLITS`) is an Omniglot folder's; `tfds_name` (one of
  `TFDS_NAMES`) and `tfds_data_dir` serve the tfds route; `progress` reports
  slow reading. Raises DataError with the problem and the fix.
  """
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if split not in SPLITS:
    raise DataError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  if split == "vinyals":
    if data_dir is None or not is_omniglot_dir(os.fspath(data_dir)):
      raise DataError(
        f"The vinyals split is Omniglot's, but {data_dir} is not an Omniglot folder: pass "
        "--data-dir a folder holding images_background and images_evaluation."
      )
    return load_vinyals(data_dir, progress=progress)
  if data_dir is not None:
    return _load_path(os.fspath(data_dir), progress)
  return _load_tfds(tfds_name, tfds_data_dir)


def load_recorded(source: str, *, tfds_data_dir: str | os.PathLike | None = None) -> Dataset:
  """Loads the data a run recorded in its config (`data_source`'s string)."""
  if source.startswith("tfds:"):
    return _load_tfds(source[len("tfds:") :], tfds_data_dir)
  if source.startswith("vinyals:"):
    return load_vinyals(source[len("vinyals:") :])
  return _load_path(source)


def _load_path(data_dir: str, progress: bool = True) -> Dataset:
  if is_omniglot_dir(data_dir):
    return load_omniglot(data_dir, progress=progress)
  if data_dir.endswith(".npz") or os.path.isfile(data_dir):
    if not os.path.isfile(data_dir):
      raise DataError(
        f"{data_dir}: no such file. Pass --data-dir a Keras-style .npz file or a "
        "directory of the four IDX files."
      )
    return load_npz(data_dir)
  return load_idx_dir(data_dir)


def _load_tfds(tfds_name: str, tfds_data_dir) -> Dataset:
  if tfds_name not in TFDS_NAMES:
    raise DataError(
      f"Unknown tfds dataset {tfds_name!r}; choose one of {', '.join(TFDS_NAMES)}, or pass "
      "--data-dir for your own IDX directory or .npz file."
    )
  from siamese_jax.data import tfds as tfds_data  # Imported lazily: tfds is slow to import.

  return tfds_data.load(tfds_name, data_dir=tfds_data_dir)


def data_source(
  data_dir: str | os.PathLike | None = None, tfds_name: str = "mnist", split: str = "lake"
) -> str:
  """Where `load_data` reads, as a run records it: an absolute path (`vinyals:` before it for
  that split), else `tfds:<name>`."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or None
  if data_dir is not None:
    path = os.path.abspath(os.fspath(data_dir))
    return f"vinyals:{path}" if split == "vinyals" else path
  return f"tfds:{tfds_name}"
