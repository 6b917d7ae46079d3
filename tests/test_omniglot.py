"""Omniglot: the official layout (folders and zips), preprocessing, pairs within alphabets."""

import os
import re
import shutil
import zipfile

import jax
import numpy as np
import pytest

import siamese_jax as sj
from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError, DataError
from siamese_jax.data.load import load_data
from siamese_jax.data.omniglot import load_omniglot
from siamese_jax.data.preprocess import preprocess_dataset, preprocess_images
from siamese_jax.sampling.pairs import class_index, sample_pairs
from siamese_jax.sampling.splits import check_data

from conftest import write_omniglot, write_png


def test_folders_and_zips_load_the_same(omniglot_dir, tmp_path):
  data = load_data(omniglot_dir)  # the data-dir route finds the layout
  zipped = load_omniglot(write_omniglot(tmp_path / "z", zipped=True), progress=False)
  assert data.train_images.shape == (48, 105, 105) and data.test_images.shape == (156, 105, 105)
  for name in ("train_images", "train_labels", "test_images", "test_labels", "train_groups",
               "test_groups", "train_drawers", "test_drawers"):  # fmt: skip
    assert np.array_equal(getattr(data, name), getattr(zipped, name)), name
  # Background characters 0..11 in 3 alphabets; evaluation ones follow, unseen.
  assert set(np.unique(data.train_labels)) == set(range(12))
  assert set(np.unique(data.test_labels)) == set(range(12, 38))
  assert data.group_names[:3] == ("Alpha0_bac", "Alpha1_bac", "Alpha2_bac")
  assert set(np.unique(data.test_groups)) == {3, 4}
  # Every character is drawn once by each of its drawers.
  for labels, drawers in ((data.train_labels, data.train_drawers),
                          (data.test_labels, data.test_drawers)):  # fmt: skip
    pairs = set(zip(labels.tolist(), drawers.tolist(), strict=True))
    assert len(pairs) == len(labels)
  assert set(np.unique(data.train_images)) == {0, 255}


def test_a_folder_without_the_layout_is_refused(omniglot_dir, tmp_path):
  half = tmp_path / "half"
  shutil.copytree(os.path.join(omniglot_dir, "images_background"), half / "images_background")
  with pytest.raises(DataError, match="neither images_evaluation/ nor images_evaluation.zip"):
    load_data(str(half))
  bad = tmp_path / "bad"
  shutil.copytree(omniglot_dir, bad)
  write_png(str(bad / "images_evaluation" / "Alpha0_eva" / "stray.png"), np.ones((105, 105), bool))
  with pytest.raises(DataError, match="stray.png.*<Alphabet>/characterNN/IIII_DD.png"):
    load_data(str(bad))
  small = tmp_path / "small"
  shutil.copytree(omniglot_dir, small)
  target = small / "images_background" / "Alpha0_bac" / "character01" / "0001_01.png"
  write_png(str(target), np.ones((28, 28), bool))
  with pytest.raises(DataError, match="28x28 pixels, but Omniglot's images are 105x105"):
    load_data(str(small))


def test_preprocessing_resizes_inverts_and_takes_bool_or_uint8():
  config = Config(image_size=28, invert=True)
  raw = np.ones((2, 105, 105), bool)
  raw[0, 40:60, 40:60] = False  # ink
  as_uint8 = raw.astype(np.uint8) * 255
  out = preprocess_images(raw, config)
  assert out.dtype == np.uint8 and out.shape == (2, 28, 28)
  np.testing.assert_array_equal(out, preprocess_images(as_uint8, config))
  assert out[1].max() == 0 and out[0].max() == 255  # paper dark, ink bright
  assert preprocess_images(raw[0], config).shape == (1, 28, 28)
  # No settings: MNIST's images pass untouched, any dtype.
  floats = np.random.default_rng(0).random((3, 28, 28))
  assert preprocess_images(floats, Config()) is floats
  with pytest.raises(DataError, match="bool or uint8"):
    preprocess_images(floats, config)
  # The filter is the config's: box and lanczos resize differently.
  lanczos = preprocess_images(raw, Config(image_size=28, invert=True, resize_filter="lanczos"))
  assert not np.array_equal(out, lanczos)


def _omniglot_index(omniglot_dir):
  data = preprocess_dataset(load_omniglot(omniglot_dir, progress=False), Config(image_size=28))
  return data, class_index(data.train_labels, 12, data.train_groups)


@pytest.mark.parametrize("negatives", ["within-group", "mixed"])
def test_negatives_within_the_anchors_group(omniglot_dir, negatives):
  data, index = _omniglot_index(omniglot_dir)
  pairs, y = sample_pairs(jax.random.key(3), None, 4000, 12, index=index, negatives=negatives)
  pairs, y = np.asarray(pairs), np.asarray(y)
  labels, groups = data.train_labels, data.train_groups
  a, b = pairs[:, 0], pairs[:, 1]
  np.testing.assert_array_equal(y, np.arange(4000) % 2 == 0)
  assert (labels[a][y == 1] == labels[b][y == 1]).all()
  assert (labels[a][y == 0] != labels[b][y == 0]).all()
  # Positive pairs are two drawings by different drawers.
  assert (data.train_drawers[a][y == 1] != data.train_drawers[b][y == 1]).all()
  neg = np.flatnonzero(y == 0)
  same_group = groups[a[neg]] == groups[b[neg]]
  if negatives == "within-group":
    assert same_group.all()
  else:
    assert same_group[neg % 4 == 1].all()
    # The others are any class: with 3 alphabets, 2/3 of them elsewhere.
    assert 0.55 < 1 - same_group[neg % 4 == 3].mean() < 0.78


def test_any_negatives_draw_what_they_drew_before_groups(omniglot_dir):
  data, index = _omniglot_index(omniglot_dir)
  plain = class_index(data.train_labels, 12)
  key = jax.random.key(5)
  with_groups = sample_pairs(key, None, 512, 12, index=index)
  without = sample_pairs(key, None, 512, 12, index=plain)
  np.testing.assert_array_equal(with_groups[0], without[0])
  with pytest.raises(DataError, match="needs each example's group"):
    sample_pairs(key, None, 8, 12, index=plain, negatives="mixed")


def test_holdout_groups_validate_on_whole_unseen_alphabets(omniglot_dir):
  data = load_omniglot(omniglot_dir, progress=False)
  config = Config(image_size=28, invert=True, holdout_groups=1, pairs="fresh", batch_size=8)
  run = check_data(config, preprocess_dataset(data, config))
  val, train = run.sets.val, run.sets.train
  assert len(np.unique(val.groups)) == 1
  assert not set(val.groups) & set(train.groups)
  assert not set(val.classes) & set(train.classes)
  assert len(train.labels) + len(val.labels) == 48
  # The same alphabet for every seed: seeds compare, and stack.
  other = check_data(Config(**{**config.to_dict(), "seed": 7}), preprocess_dataset(data, config))
  np.testing.assert_array_equal(other.sets.val.classes, val.classes)
  with pytest.raises(ConfigError, match="at least 2 must stay"):
    check_data(Config(holdout_groups=2, image_size=28), preprocess_dataset(data, config))
  with pytest.raises(ConfigError, match="has no groups"):
    from conftest import synthetic_mnist

    check_data(Config(negatives="mixed", pairs="fresh"), synthetic_mnist())


def test_config_refuses_contradictions():
  from siamese_jax.sampling import check

  with pytest.raises(ConfigError, match="--pairs fresh"):
    check(Config(negatives="within-group"))
  with pytest.raises(ConfigError, match="not both"):
    Config(holdout=10, holdout_groups=2)
  with pytest.raises(ConfigError, match="image_size"):
    Config(image_size=4)
  with pytest.raises(ConfigError, match="augment"):
    Config(augment="elastic")


def test_the_real_omniglot_zips(real_omniglot_dir, tmp_path):
  from benchmarks.lake_runs import write_runs
  from siamese_jax.evaluation.oneshot import read_runs

  data = load_data(real_omniglot_dir)
  assert data.train_images.shape == (19280, 105, 105) and data.test_images.shape == (
    13180,
    105,
    105,
  )
  assert len(np.unique(data.train_labels)) == 964 and len(np.unique(data.test_labels)) == 659
  assert len(np.unique(data.train_groups)) == 30 and len(np.unique(data.test_groups)) == 20
  assert len(np.unique(data.train_drawers)) == 20
  # Runs built in Lake's format from the evaluation zip read back as built.
  write_runs(data, str(tmp_path / "runs"), runs=3, seed=1)
  runs = read_runs(str(tmp_path / "runs"), count=3)
  for run in runs:
    assert run.training.dtype == bool and run.training.shape == (20, 105, 105)
    for m, k in enumerate(run.answer):  # the item's character is its answer's
      hit = np.flatnonzero((data.test_images == run.test[m] * np.uint8(255)).all((1, 2)))
      ref = np.flatnonzero((data.test_images == run.training[k] * np.uint8(255)).all((1, 2)))
      assert set(data.test_labels[hit]) == set(data.test_labels[ref])


@pytest.mark.slow
def test_the_omniglot_step_benchmark_runs(real_omniglot_dir, capsys):
  # The default run's data and states through build_run, two steps a part.
  from benchmarks import omniglot_step
  from siamese_jax import cli

  argv = ["--data-dir", real_omniglot_dir, "--rounds", "1", "--steps", "2"]
  assert cli.run_main(omniglot_step.main, argv) == 0
  out = capsys.readouterr().out
  assert "step_no_augment" in out and "pairs/s" in out
  assert re.search(r"step_widths is the step with --hidden-sizes 32,64,64,64,128: \d+\.\d\dx", out)


def test_a_corrupt_png_inside_an_omniglot_zip_names_the_member(tmp_path):
  root = write_omniglot(tmp_path / "o", zipped=True)
  src = os.path.join(root, "images_background.zip")
  with zipfile.ZipFile(src) as z:
    victim = [i for i in z.infolist() if i.filename.endswith(".png")][3]
  raw = bytearray(open(src, "rb").read())
  start = victim.header_offset + 30 + len(victim.filename) + len(victim.extra)
  for i in range(start + 8, start + 24):  # inside the member's stored bytes: its CRC fails
    raw[i] ^= 0xFF
  open(src, "wb").write(bytes(raw))
  with pytest.raises(DataError, match=victim.filename.split("/", 1)[1]):
    load_omniglot(root, progress=False)


def test_reading_omniglot_without_progress_prints_nothing(tmp_path, capsys):
  load_omniglot(write_omniglot(tmp_path / "o"), progress=False)
  sj.load_data(write_omniglot(tmp_path / "p"), progress=False)
  assert capsys.readouterr().err == ""


def test_a_zip_member_that_would_inflate_past_any_file_of_the_data_is_refused(tmp_path):
  from siamese_jax.data.archive import MAX_MEMBER_BYTES, Archive

  with zipfile.ZipFile(tmp_path / "z.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("big.png", b"\0" * (MAX_MEMBER_BYTES + 1))
  with pytest.raises(DataError, match="would inflate to 67,108,865 bytes.*zip bomb"):
    Archive(str(tmp_path / "z.zip")).read("big.png")
