"""The tfds route, offline: prepared from local files in a temporary data dir.

The official files cannot be downloaded here, so the tests give tfds' manual
dir files they wrote and a builder subclass whose registered checksums are
those files' (the production builder uses tfds' stock MNIST checksums).
"""

import os
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from tensorflow_datasets.core.download import checksums  # noqa: E402

from siamese_jax import DataError  # noqa: E402
from siamese_jax.data import tfds as tfds_data  # noqa: E402

from conftest import write_mnist_dir  # noqa: E402


def builder_with_checksums_of(manual_dir):
  """A MnistNoTF whose expected checksums are those of the files in manual_dir."""
  infos = {}
  for url, fname in zip(
    tfds_data._download_urls().values(), tfds_data._FILES.values(), strict=True
  ):
    got = checksums.compute_url_info(os.path.join(manual_dir, fname))
    infos[url] = checksums.UrlInfo(size=got.size, checksum=got.checksum, filename=fname)

  class LocalMnist(tfds_data.MnistNoTF, skip_registration=True):
    name = "mnist_no_tf"

    @tfds_data.tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
      return infos

  return LocalMnist


def test_stock_checksums_are_used():
  infos = tfds_data.MnistNoTF.url_infos
  assert len(infos) == 4
  url = tfds_data.MnistNoTF.URL + "train-images-idx3-ubyte.gz"
  assert infos[url].checksum.startswith("440fcabf")


def test_prepares_offline_without_tensorflow_and_caches(tmp_path, small_mnist):
  manual = write_mnist_dir(tmp_path / "tfds" / "downloads" / "manual", small_mnist)
  builder = builder_with_checksums_of(manual)
  data = tfds_data.load(data_dir=tmp_path / "tfds", builder_cls=builder)
  # Same arrays, same order as the IDX files (the original's pairs depend on it).
  np.testing.assert_array_equal(data.train_images, small_mnist.train_images)
  np.testing.assert_array_equal(data.train_labels, small_mnist.train_labels)
  np.testing.assert_array_equal(data.test_images, small_mnist.test_images)
  cache = tmp_path / "tfds" / "mnist_no_tf" / "3.0.1" / "siamese_jax_arrays.npz"
  assert cache.exists()
  # The second load reads the cache: it works even with the records gone.
  for f in (tmp_path / "tfds" / "mnist_no_tf" / "3.0.1").glob("*.array_record*"):
    f.unlink()
  again = tfds_data.load(data_dir=tmp_path / "tfds", builder_cls=builder)
  np.testing.assert_array_equal(again.test_labels, small_mnist.test_labels)


def test_a_cache_cut_short_is_decoded_again(tmp_path, small_mnist, capsys):
  manual = write_mnist_dir(tmp_path / "tfds" / "downloads" / "manual", small_mnist)
  builder = builder_with_checksums_of(manual)
  tfds_data.load(data_dir=tmp_path / "tfds", builder_cls=builder)
  cache = tmp_path / "tfds" / "mnist_no_tf" / "3.0.1" / "siamese_jax_arrays.npz"
  whole = cache.read_bytes()
  cache.write_bytes(whole[: len(whole) // 2])  # issue 32: it was a traceback
  again = tfds_data.load(data_dir=tmp_path / "tfds", builder_cls=builder)
  np.testing.assert_array_equal(again.train_images, small_mnist.train_images)
  err = capsys.readouterr().err
  assert "decoded-array cache" in err and "damaged" in err
  assert cache.read_bytes() == whole  # written again, whole
  import sys

  assert "tensorflow" not in sys.modules


def test_wrong_checksum_is_refused(tmp_path, small_mnist):
  # Files that are not the official ones, against the stock checksums.
  write_mnist_dir(tmp_path / "tfds" / "downloads" / "manual", small_mnist)
  with pytest.raises(DataError, match="checksum.*--data-dir"):
    tfds_data.load(data_dir=tmp_path / "tfds")
  assert not (tmp_path / "tfds" / "mnist_no_tf" / "3.0.1" / "siamese_jax_arrays.npz").exists()


def test_offline_without_files_fails_fast_naming_both_fixes(tmp_path, monkeypatch):
  # Whatever this machine's network, behave as if the host were unreachable.
  monkeypatch.setattr(tfds_data, "_can_reach", lambda url: False)
  t0 = time.perf_counter()
  with pytest.raises(DataError) as e:
    tfds_data.load(data_dir=tmp_path / "tfds")
  assert time.perf_counter() - t0 < 30
  msg = str(e.value)
  assert "--data-dir" in msg and "SIAMESE_JAX_DATA_DIR" in msg
  assert os.path.join(str(tmp_path / "tfds"), "downloads", "manual") in msg
