"""Your own data: Keras-style .npz files, any IDX dataset, tfds names."""

import json
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from siamese_jax import Config, DataError, load_data, train_and_evaluate
from siamese_jax.data import tfds as tfds_data
from siamese_jax.data.omniglot import load_omniglot

from conftest import png_header_only, run_module, write_npz, write_omniglot
from conftest import results as read_results


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


def small_12x10(rng):
  """3 classes of 12x10 images: (train, test) as (images, labels)."""
  templates = rng.integers(0, 256, (3, 12, 10))

  def split(n):
    y = np.arange(n) % 3
    x = np.clip(templates[y] + rng.integers(-40, 41, (n, 12, 10)), 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)

  return split(300), split(90)


def write_12x10(path):
  (xt, yt), (xe, ye) = small_12x10(np.random.default_rng(0))
  np.savez(path, x_train=xt, y_train=yt, x_test=xe, y_test=ye)
  return str(path)


@pytest.mark.slow
def test_other_image_sizes_and_class_counts_train(tmp_path):
  # Nothing assumes MNIST's 28x28 and 10 classes.
  data = load_data(write_12x10(tmp_path / "own.npz"))
  assert data.num_classes == 3 and data.image_shape == (12, 10)
  for encoder in ("mlp", "cnn"):
    results = train_and_evaluate(
      Config(epochs=3, batch_size=30, encoder=encoder), tmp_path / encoder, data, plots=False
    )
    assert results["image_shape"] == [12, 10]
    assert results["test_accuracy"] > 0.8, encoder
  # What trains alone trains under seeds and sweeps too, each model its own
  # run. Here the two seeds share one device, so they train vmapped, and
  # XLA's batched matmuls round these 120-wide rows differently from the
  # single run's: equal to float32 rounding, not bit for bit (on MNIST, and
  # with one model per device, they are bitwise: test_multi_seed.py).
  for encoder in ("cnn",):
    config = Config(epochs=3, batch_size=30, encoder=encoder)
    summary = train_and_evaluate(
      config, tmp_path / f"{encoder}-seeds", data, seeds=[0, 1], sweep=("margin", (1.0, 2.0)),
      plots=False,
    )  # fmt: skip
    assert summary["by_value"]["1"]["num_seeds"] == 2
    one = read_results(tmp_path / encoder / "results.json")
    many = read_results(tmp_path / f"{encoder}-seeds/margin_1/seed_0/results.json")
    assert many["image_shape"] == [12, 10] and many["num_classes"] == 3
    for key in ("train_loss", "test_loss", "test_accuracy", "test_roc_auc"):
      assert many[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_finished_run_reads_its_own_data_and_refuses_other_data(tmp_path, small_mnist):
  path = write_npz(tmp_path / "mnist.npz", small_mnist)
  workdir = tmp_path / "run"
  r = run_module(
    "experiments.mnist_siamese", "--data-dir", path, "--epochs", "1", "--batch-size", "32",
    "--workdir", str(workdir), "--no-progress",
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert json.loads((workdir / "config.json").read_text())["data"] == path
  # No --data-dir: embed reads what config.json names (the variable is unset here).
  r = run_module("experiments.embed", "--workdir", str(workdir), "--out", str(tmp_path / "e"))
  assert r.returncode == 0, r.stderr
  assert len((tmp_path / "e/labels.tsv").read_text().splitlines()) == len(small_mnist.test_labels)
  # Other data: its image shape and the run's are both named.
  other = write_12x10(tmp_path / "other.npz")
  r = run_module(
    "experiments.embed", "--workdir", str(workdir), "--out", str(tmp_path / "f"),
    "--data-dir", other,
  )  # fmt: skip
  assert r.returncode == 1, r.stderr
  assert "12x10 images" in r.stderr and "trained on 28x28" in r.stderr
  assert "Traceback" not in r.stderr and not (tmp_path / "f").exists()


def test_every_depth_reaches_the_model_as_the_same_picture_in_8_bits(tmp_path):
  from siamese_jax.data.images import read_image, to_uint8

  gray = np.array([[0, 128, 255]], np.uint8)
  Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit PNG
  Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "f.tif")  # float TIFF
  Image.fromarray(gray > 100).save(tmp_path / "b.png")  # 1-bit
  assert read_image(str(tmp_path / "g16.png")).tolist() == gray.tolist()  # was clipped to 255
  assert read_image(str(tmp_path / "f.tif")).tolist() == gray.tolist()  # was 0, 0, 1
  assert read_image(str(tmp_path / "b.png")).tolist() == [[0, 255, 255]]
  assert to_uint8(gray > 100, "a").tolist() == [[0, 255, 255]]
  assert to_uint8(gray.astype(np.uint16) * 257, "a").tolist() == gray.tolist()
  assert to_uint8(gray.astype(np.int64), "a").tolist() == gray.tolist()  # 8-bit values, any int
  with pytest.raises(DataError, match="int64 pixels 0..256 are not 8-bit"):
    to_uint8(np.array([0, 256]), "a")
  with pytest.raises(DataError, match=r"a: float pixels must lie in \[0, 1\]"):
    to_uint8(gray.astype(np.float32), "a")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
  from siamese_jax.data.images import read_image

  path = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)  # past PIL's own limit
  with pytest.raises(DataError, match=r"bomb\.png: .*decompression bomb"):
    read_image(path)
  below_pil = png_header_only(tmp_path / "b12k.png", 12_000, 12_000)  # past ours alone
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # our refusal alone, without PIL's warning beside it
    with pytest.raises(DataError, match=r"b12k\.png: 12000x12000 pixels.*decompression bomb"):
      read_image(below_pil)
  # Inside an Omniglot zip: the same paragraph, naming the member.
  root = tmp_path / "omni"
  write_omniglot(root, zipped=True)
  zpath = root / "images_background.zip"
  with zipfile.ZipFile(zpath) as z:
    first = next(n for n in z.namelist() if n.endswith(".png"))
    members = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
  members[first] = open(path, "rb").read()
  with zipfile.ZipFile(zpath, "w") as z:
    for n, data in members.items():
      z.writestr(n, data)
  with pytest.raises(DataError, match="decompression bomb"):
    load_omniglot(str(root), progress=False)
