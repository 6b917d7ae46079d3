"""Your own data: Keras-style .npz files, any IDX dataset, tfds names."""

import numpy as np
import pytest

from siamese_jax import Config, DataError, load_data, tfds_data, train_and_evaluate

from conftest import run_module, write_npz


def test_npz_loads_like_the_idx_dir(tmp_path, small_mnist, small_mnist_dir, no_data_env):
  from_npz = load_data(write_npz(tmp_path / "mnist.npz", small_mnist))
  from_idx = load_data(small_mnist_dir)
  for k in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(from_npz, k), getattr(from_idx, k))
  # (N, 1) labels, as CIFAR-style loaders give them, are flattened.
  col = load_data(
    write_npz(tmp_path / "col.npz", small_mnist, y_train=small_mnist.train_labels[:, None])
  )
  np.testing.assert_array_equal(col.train_labels, small_mnist.train_labels)


@pytest.mark.parametrize(
  "override, message",
  [
    ({"y_test": None}, r"bad\.npz: lacks y_test"),
    ({"x_train": "float"}, r"bad\.npz: train images: expected uint8"),
    ({"y_train": "short"}, r"bad\.npz: train split: 600 images but 599 labels"),
    ({"y_train": "one"}, r"bad\.npz: pairs need at least 2 classes"),
  ],
)
def test_bad_npz_names_the_file_and_the_problem(tmp_path, small_mnist, override, message):
  values = {
    "float": small_mnist.train_images.astype(np.float32) / 255,
    "short": small_mnist.train_labels[:-1],
    "one": np.zeros_like(small_mnist.train_labels),
    None: None,
  }
  path = write_npz(tmp_path / "bad.npz", small_mnist, **{k: values[v] for k, v in override.items()})
  with pytest.raises(DataError, match=message):
    load_data(path)


def test_not_an_npz_and_a_missing_one(tmp_path):
  bad = tmp_path / "x.npz"
  bad.write_text("not a zip")
  with pytest.raises(DataError, match=r"x\.npz: cannot be read as an \.npz"):
    load_data(bad)
  with pytest.raises(DataError, match=r"gone\.npz: no such file"):
    load_data(tmp_path / "gone.npz")


def test_other_image_sizes_and_class_counts_train(tmp_path):
  # 3 classes of 12x10 images: nothing assumes MNIST's 28x28 and 10 classes.
  rng = np.random.default_rng(0)
  templates = rng.integers(0, 256, (3, 12, 10))

  def split(n):
    y = np.arange(n) % 3
    x = np.clip(templates[y] + rng.integers(-40, 41, (n, 12, 10)), 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)

  (xt, yt), (xe, ye) = split(300), split(90)
  path = tmp_path / "own.npz"
  np.savez(path, x_train=xt, y_train=yt, x_test=xe, y_test=ye)
  data = load_data(path)
  assert data.num_classes == 3 and data.image_shape == (12, 10)
  for encoder in ("mlp", "cnn"):
    results = train_and_evaluate(
      Config(epochs=3, batch_size=30, encoder=encoder), tmp_path / encoder, data, plots=False
    )
    assert results["image_shape"] == [12, 10]
    assert results["test_accuracy"] > 0.8, encoder


def test_the_cli_takes_an_npz(tmp_path, small_mnist):
  path = write_npz(tmp_path / "mnist.npz", small_mnist)
  r = run_module(
    "experiments.mnist_siamese", "--data-dir", path, "--epochs", "1", "--batch-size", "32",
    "--workdir", str(tmp_path / "run"), "--no-progress",
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert "P@1" in r.stdout


def test_tfds_names_choose_their_own_builder_files_and_checksums():
  assert set(tfds_data.BUILDERS) == {"mnist", "fashion_mnist", "kmnist"}
  seen = set()
  for name, builder in tfds_data.BUILDERS.items():
    urls = tfds_data._download_urls(builder)
    # Every file has a stock checksum, and each dataset downloads its own.
    assert all(u in builder.url_infos for u in urls.values()), name
    assert builder.stock.URL in next(iter(urls.values()))
    seen.add(builder.name)
  assert len(seen) == 3


def test_an_unknown_tfds_name_is_refused(no_data_env):
  with pytest.raises(DataError, match="Unknown tfds dataset 'cifar10'"):
    load_data(tfds_name="cifar10")
