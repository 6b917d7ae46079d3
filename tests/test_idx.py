"""The IDX reader and the data-dir loader, on files the tests write."""

import gzip
import os

import numpy as np
import pytest

from siamese_jax import DataError, Dataset, load_data
from siamese_jax.data.dataset import DATA_DIR_ENV
from siamese_jax.data.idx import load_idx_dir, read_idx

from conftest import idx_bytes, write_idx, write_mnist_dir


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_raw(tmp_path, gz):
  arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
  path = write_idx(tmp_path / "x", arr, gz=gz)
  np.testing.assert_array_equal(read_idx(path), arr)
  labels = np.arange(7, dtype=np.uint8)
  np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "y", labels, gz=gz)), labels)


def test_truncated_gz_names_the_file(tmp_path):
  path = write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28), np.uint8))
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])
  with pytest.raises(DataError, match=r"t\.gz.*(corrupt|truncated)"):
    read_idx(path)


def test_corrupt_gz_names_the_file(tmp_path):
  path = write_idx(tmp_path / "c.gz", np.arange(100, dtype=np.uint8))
  data = bytearray(open(path, "rb").read())
  data[12:20] = b"\xff" * 8
  open(path, "wb").write(bytes(data))
  with pytest.raises(DataError, match=r"c\.gz"):
    read_idx(path)


def test_bad_magic_number(tmp_path):
  raw = bytearray(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
  raw[2] = 0x0D  # float32 type code
  path = tmp_path / "m"
  path.write_bytes(bytes(raw))
  with pytest.raises(DataError, match="magic number 0x00000d03"):
    read_idx(path)


def test_payload_shorter_than_header_declares(tmp_path):
  raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5]
  path = tmp_path / "short"
  path.write_bytes(raw)
  with pytest.raises(DataError, match=r"short: header declares shape \(3, 28, 28\)"):
    read_idx(path)


def test_missing_file_named(tmp_path):
  with pytest.raises(DataError, match="nope.*not found"):
    read_idx(tmp_path / "nope")


def test_loads_a_dir_gz_or_raw(tmp_path, small_mnist):
  for gz in (True, False):
    d = write_mnist_dir(tmp_path / str(gz), small_mnist, gz=gz)
    data = load_idx_dir(d)
    np.testing.assert_array_equal(data.train_images, small_mnist.train_images)
    np.testing.assert_array_equal(data.test_labels, small_mnist.test_labels)


def test_env_var_chooses_the_dir(monkeypatch, small_mnist_dir, small_mnist):
  monkeypatch.setenv(DATA_DIR_ENV, small_mnist_dir)
  np.testing.assert_array_equal(load_data().train_labels, small_mnist.train_labels)


def test_missing_files_listed(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "m", small_mnist)
  os.unlink(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
    load_idx_dir(d)


def test_missing_dir(tmp_path):
  with pytest.raises(DataError, match="does not exist.*--data-dir"):
    load_idx_dir(tmp_path / "absent")


def test_count_mismatch_names_both_files(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "m", small_mnist)
  write_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), small_mnist.train_labels[:-1])
  with pytest.raises(DataError, match=r"train-images.*600 images.*train-labels.*599 labels"):
    load_idx_dir(d)


def test_a_class_with_one_training_image_names_the_file(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "m", small_mnist)
  bad = small_mnist.train_labels.copy()
  bad[3] = 11
  write_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), bad)
  with pytest.raises(DataError, match=r"train-labels.*class\(es\) \[11\].*single training image"):
    load_idx_dir(d)


def test_classes_and_image_size_are_read_from_the_files(tmp_path):
  # Not MNIST's 28x28 and 10 classes: 3 classes of 5x7 images, and a test
  # class (3) that never occurs in training, as an unseen-class split has.
  rng = np.random.default_rng(0)
  tr_y, te_y = np.arange(30) % 3, np.arange(8) % 4
  data = Dataset(
    rng.integers(0, 256, (30, 5, 7), dtype=np.uint8),
    tr_y.astype(np.uint8),
    rng.integers(0, 256, (8, 5, 7), dtype=np.uint8),
    te_y.astype(np.uint8),
  )
  loaded = load_idx_dir(write_mnist_dir(tmp_path / "m", data))
  assert loaded.image_shape == (5, 7) and loaded.num_classes == 4
  assert loaded.train_labels.dtype == np.int32
  np.testing.assert_array_equal(loaded.test_labels, te_y)


def test_swapped_files(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "m", small_mnist)
  write_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), small_mnist.train_labels)
  with pytest.raises(DataError, match="1-D array, expected 3-D"):
    load_idx_dir(d)


def test_gzip_detected_by_content_not_name(tmp_path):
  arr = np.arange(10, dtype=np.uint8)
  path = tmp_path / "plain-name"
  with gzip.open(path, "wb") as f:
    f.write(idx_bytes(arr))
  np.testing.assert_array_equal(read_idx(path), arr)


def test_payload_longer_than_header_declares(tmp_path):
  path = tmp_path / "long"
  path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)) + b"\x00" * 7)
  with pytest.raises(DataError, match=r"long: header declares .* holds 2359"):
    read_idx(path)


def test_an_idx_gzip_is_read_as_a_stream_and_a_huge_header_is_refused(tmp_path):
  import gzip

  from siamese_jax.data.idx import read_idx

  # A header declaring 50 x MNIST's images: refused before anything is inflated.
  head = b"\x00\x00\x08\x03" + np.array([3_000_000, 28, 28], ">u4").tobytes()
  (tmp_path / "big.gz").write_bytes(gzip.compress(head + b"\0" * 1000))
  with pytest.raises(DataError, match=r"big\.gz: header declares shape \(3000000, 28, 28\)"):
    read_idx(tmp_path / "big.gz")
  # Data past the header: counted without being kept, and refused.
  ok = b"\x00\x00\x08\x01" + np.array([4], ">u4").tobytes()
  (tmp_path / "long.gz").write_bytes(gzip.compress(ok + b"\1" * 4 + b"\0" * (3 << 20)))
  with pytest.raises(DataError, match=r"long\.gz: header declares shape \(4,\) .* holds 3145732"):
    read_idx(tmp_path / "long.gz")
