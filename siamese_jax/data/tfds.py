"""MNIST, Fashion-MNIST and KMNIST through tensorflow-datasets, without TensorFlow.

tfds' stock `mnist` builder (and `fashion_mnist`, `kmnist`) prepares and
`tfds.load` reads only with TensorFlow, about 1.4 GB for four small files.
`MnistNoTF` keeps the stock features, version, URLs and checksums (every
download verified as `tfds.load` would), parses the gz files with
`siamese_jax.data.idx`, PNG-encodes with PIL, and writes `array_record`,
which `as_data_source` reads without TF. The decoded arrays are cached as
an `.npz` beside it. Offline, tfds retries for minutes, so the builder
first looks for the files (manual dir, download cache), then probes the
host briefly and fails at once naming both fixes.
"""

import io
import os
import socket
import sys
import threading
import urllib.parse
import zipfile
import zlib

import numpy as np

# tfds and PIL are imported at module level: this module is only imported on
# the tfds route (`siamese_jax.data.load.load_data` imports it lazily).
import tensorflow_datasets as tfds  # noqa: E402  (isort: after numpy)
from absl import logging as absl_logging
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
from tensorflow_datasets.image_classification import mnist as tfds_stock_mnist

from siamese_jax.core.errors import DataError
from siamese_jax.core.files import WriteError, atomic_write_bytes
from siamese_jax.data import idx
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset

_CACHE_NAME = "siamese_jax_arrays.npz"
_PROBE_TIMEOUT_S = 5.0

_FILES = {
  "train_images": "train-images-idx3-ubyte.gz",
  "train_labels": "train-labels-idx1-ubyte.gz",
  "test_images": "t10k-images-idx3-ubyte.gz",
  "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _png(image: np.ndarray) -> bytes:
  """PNG-encodes a uint8[28, 28] image with PIL, as tfds would with tf."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(image, mode="L").save(buf, format="PNG")
  return buf.getvalue()


class MnistNoTF(tfds_stock_mnist.MNIST, skip_registration=True):
  """tfds' MNIST builder prepared with gzip, numpy and PIL, keeping `stock`'s URLs and checksums.

  Registered under no name and stored under its own, so the stock `mnist`
  (and a TF-built copy) is left alone.
  """

  name = "mnist_no_tf"
  stock = tfds_stock_mnist.MNIST

  # The stock builder's checksums, found through the stock class: tfds looks
  # for them next to the file that defines the builder, which is this one.
  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):
    return cls.stock.url_infos

  def _info(self):
    stock = self.stock._info(self)
    # Same features, version and metadata as the stock builder, but records
    # keep the IDX files' order: the original pairs the i-th and (i+1)-th
    # image of each digit in that order (as Keras' `mnist.load_data` gives
    # it), and tfds would otherwise shuffle examples by key hash.
    return tfds.core.DatasetInfo(
      builder=self,
      description=stock.description,
      features=stock.features,
      supervised_keys=stock.supervised_keys,
      homepage=stock.homepage,
      citation=stock.citation,
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    urls = {k: urllib.parse.urljoin(self.URL, v) for k, v in _FILES.items()}
    paths = dl_manager.download(urls)  # Verified against `url_infos`.
    return {
      "train": self._generate_examples(paths["train_images"], paths["train_labels"]),
      "test": self._generate_examples(paths["test_images"], paths["test_labels"]),
    }

  def _generate_examples(self, images_path, labels_path):
    images = idx.read_idx(images_path)
    labels = idx.read_idx(labels_path)
    if len(images) != len(labels):
      raise DataError(
        f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels."
      )
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
      # Bytes pass through tfds' Image feature untouched (no tf needed).
      yield i, {"image": _png(image), "label": int(label)}


class FashionMnistNoTF(MnistNoTF, skip_registration=True):
  """Fashion-MNIST: MNIST's files, sizes and layout, Zalando's clothing classes."""

  name = "fashion_mnist_no_tf"
  stock = tfds_stock_mnist.FashionMNIST
  URL = tfds_stock_mnist.FashionMNIST.URL


class KmnistNoTF(MnistNoTF, skip_registration=True):
  """Kuzushiji-MNIST: MNIST's files, sizes and layout, ten cursive Japanese characters."""

  name = "kmnist_no_tf"
  stock = tfds_stock_mnist.KMNIST
  URL = tfds_stock_mnist.KMNIST.URL


BUILDERS = {"mnist": MnistNoTF, "fashion_mnist": FashionMnistNoTF, "kmnist": KmnistNoTF}


def _download_urls(builder_cls=MnistNoTF) -> dict[str, str]:
  return {k: urllib.parse.urljoin(builder_cls.URL, v) for k, v in _FILES.items()}


def _can_reach(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to the URL's host opens in `timeout` (a thread: DNS can hang)."""
  host = urllib.parse.urlparse(url).hostname
  result = []

  def probe():
    try:
      with socket.create_connection((host, 443), timeout=timeout):
        result.append(True)
    except OSError:
      result.append(False)

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


def _files_present(builder: MnistNoTF, download_dir: str, manual_dir: str) -> bool:
  """Whether all four files are in tfds' manual dir or its download cache."""
  from tensorflow_datasets.core.download import resource

  for url in _download_urls(type(builder)).values():
    info = builder.url_infos[url]
    candidates = (
      os.path.join(manual_dir, info.filename),
      os.path.join(download_dir, builder.name, resource.get_dl_fname(url, info.checksum)),
    )
    if not any(os.path.isfile(c) for c in candidates):
      return False
  return True


def _save_cache(path: str, arrays: dict[str, np.ndarray]) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def load(name: str = "mnist", data_dir: str | os.PathLike | None = None, builder_cls=None):
  """Prepares (once) and loads "mnist", "fashion_mnist" or "kmnist" through tfds, without TF.

  `data_dir` is tfds' (its default if None); `builder_cls` replaces
  `BUILDERS[name]` (tests pass their own checksums). Raises DataError when
  the files can be neither found nor downloaded, or fail their checksum.
  """
  # tfds warns (through absl) that a not-yet-prepared dataset has no
  # dataset_info.json; expected on a first run, so keep it off the console.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    return _load(data_dir, builder_cls or BUILDERS[name])
  finally:
    absl_logging.set_verbosity(verbosity)


def _load(data_dir, builder_cls):
  builder = builder_cls(data_dir=None if data_dir is None else os.fspath(data_dir))
  cache = os.path.join(builder.data_dir, _CACHE_NAME)
  if os.path.isfile(cache):
    try:
      with np.load(cache, allow_pickle=False) as z:
        return Dataset(**{k: z[k] for k in _FILES}, source=cache)
    except (
      OSError,
      ValueError,
      EOFError,
      KeyError,
      zipfile.BadZipFile,
      zlib.error,
      DataError,
    ) as e:
      # Only a speed-up: a cache cut short is decoded again from tfds' records.
      print(
        f"note: the decoded-array cache {cache} is damaged ({e or type(e).__name__}); "
        "decoding the dataset again.",
        file=sys.stderr,
      )

  root = os.fspath(builder.data_dir_root)
  download_dir = os.path.join(root, "downloads")
  manual_dir = os.path.join(download_dir, "manual")
  if not builder.is_prepared() and not _files_present(builder, download_dir, manual_dir):
    url = next(iter(_download_urls(builder_cls).values()))
    if not _can_reach(url):
      raise DataError(
        f"{builder.name.removesuffix('_no_tf')} is not available offline and its "
        "download host cannot be "
        f"reached. Either pass --data-dir DIR (or set {DATA_DIR_ENV}=DIR) to a "
        "directory holding the four IDX files, or copy the official "
        f"files ({', '.join(_FILES.values())}) into tfds' manual dir "
        f"{manual_dir} so tfds can verify and prepare them offline."
      )

  try:
    builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
  except NonMatchingChecksumError as e:
    raise DataError(
      f"A {builder.name.removesuffix('_no_tf')} file failed tfds' checksum verification ({str(e).splitlines()[0]}). "
      "The file is "
      "not the official one (re-compressed or corrupt). Delete it and let tfds "
      "download it again, or use --data-dir for a directory of IDX files, "
      "which are validated by structure instead of checksum."
    ) from None

  arrays = {}
  for split in ("train", "test"):
    source = builder.as_data_source(split=split)
    n = len(source)
    images = np.empty((n, 28, 28), np.uint8)
    labels = np.empty((n,), np.uint8)
    for i in range(n):
      ex = source[i]
      images[i] = np.asarray(ex["image"]).reshape(28, 28)
      labels[i] = ex["label"]
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
  data = Dataset(**arrays, source=builder.data_dir)
  try:
    _save_cache(cache, arrays)
  except WriteError as e:  # Only a speed-up: the next load decodes again.
    print(f"note: the decoded-array cache was not written: {e}", file=sys.stderr)
  return data
