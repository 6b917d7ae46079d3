"""Omniglot's pooled split (Vinyals et al. 2016): the shipped lists, the loader, the program."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from siamese_jax.core.errors import DataError
from siamese_jax.data import vinyals
from siamese_jax.data.load import data_source, load_data
from siamese_jax.sampling.splits import make_pair_sets, run_keys

from conftest import run_module, write_omniglot


def write_lists(directory, trainval, test, val=None) -> str:
  os.makedirs(directory, exist_ok=True)
  val = VAL if val is None else val
  for name, lines in (("trainval", trainval), ("test", test), ("val", val)):
    with open(os.path.join(directory, f"{name}.txt"), "w") as f:
      f.write("".join(line + "\n" for line in lines))
  return str(directory)


def rotated(chars, degrees=(0, 90, 180, 270)):
  return [f"{c}/rot{d:03d}" for c in chars for d in degrees]


# The synthetic Omniglot's characters (conftest.OMNIGLOT_SHAPE): trainval takes
# characters of both sets, test 15 of the first evaluation alphabet in two rotations.
TRAIN = [f"Alpha{a}_bac/character{c:02d}" for a in range(3) for c in range(1, 5)] + [
  f"Alpha0_eva/character{c:02d}" for c in range(1, 6)
]
TEST = rotated([f"Alpha0_eva/character{c:02d}" for c in range(6, 21)], (0, 180))
VAL = rotated([f"Alpha2_bac/character{c:02d}" for c in range(1, 5)])  # one whole alphabet


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
  root = write_omniglot(tmp_path_factory.mktemp("omniglot"))
  lists = write_lists(tmp_path_factory.mktemp("lists"), rotated(TRAIN), TEST)
  return root, lists


def test_the_shipped_lists_are_the_published_split():
  trainval = vinyals.read_class_list(os.path.join(vinyals.LISTS, "trainval.txt"))
  test = vinyals.read_class_list(os.path.join(vinyals.LISTS, "test.txt"))
  assert (len(trainval), len(test)) == (4800, 1692)
  chars = [{(a, c) for a, c, _ in lines} for lines in (trainval, test)]
  assert (len(chars[0]), len(chars[1])) == (1200, 423) and not chars[0] & chars[1]
  assert {d for _, _, d in trainval + test} == set(vinyals.ROTATIONS)
  # val.txt: 172 of trainval's characters, 5 whole alphabets (its validation classes).
  val = vinyals.read_class_list(os.path.join(vinyals.LISTS, "val.txt"))
  val_chars, val_alphabets = {(a, c) for a, c, _ in val}, {a for a, _, _ in val}
  assert len(val) == 688 and len(val_chars) == 172 and len(val_alphabets) == 5
  assert val_chars == {(a, c) for a, c in chars[0] if a in val_alphabets}
  assert os.path.isfile(os.path.join(vinyals.LISTS, "LICENSE"))


def test_the_split_pools_alphabets_and_turns_the_test_classes(pooled):
  root, lists = pooled
  data = vinyals.load_vinyals(root, lists=lists, progress=False)
  # 12 background characters by 4 drawers, 5 evaluation ones by 6.
  assert data.train_images.shape == (12 * 4 + 5 * 6, 105, 105)
  assert sorted(set(data.train_labels.tolist())) == list(range(17))
  assert len(set(data.train_groups.tolist())) == 4  # three background alphabets, one evaluation
  assert data.test_images.shape == (30 * 6, 105, 105)
  assert sorted(set(data.test_labels.tolist())) == list(range(17, 47))
  assert set(data.test_groups.tolist()) == {5}  # one group: every episode pools them all
  assert data.group_names[5] == "pooled test classes"
  assert data.val_groups == (2,) and data.group_names[2] == "Alpha2_bac"  # val.txt's alphabet
  # --holdout-groups holds out the published groups, whichever they are.
  for published in ((2,), (0, 3)):
    sets = make_pair_sets(
      run_keys(0), replace(data, val_groups=published), holdout_groups=len(published)
    )
    assert set(sets.val.groups.tolist()) == set(published)
    assert not set(sets.train.groups.tolist()) & set(published)
  # Class 17 is character06 as drawn, class 18 the same turned by 180 degrees.
  upright = data.test_images[data.test_labels == 17]
  np.testing.assert_array_equal(data.test_images[data.test_labels == 18], upright[:, ::-1, ::-1])
  assert (data.test_drawers[data.test_labels == 17] == np.arange(6)).all()


@pytest.mark.parametrize(
  "trainval, test, message",
  [
    (rotated(TRAIN), ["Alpha9_eva/character01/rot000"], "names Alpha9_eva/character01"),
    (rotated(TRAIN)[:-1], TEST, "only some rotations of 1 character"),
    (rotated(TRAIN), ["Alpha0_eva/character06/rot045"], "line 1: 'Alpha0_eva/character06/rot045'"),
    (rotated(TRAIN), TEST, "should list whole alphabets of trainval.txt"),
  ],
  ids=["unknown-character", "missing-rotation", "bad-rotation", "val-part-of-an-alphabet"],
)
def test_a_list_that_does_not_fit_the_data_is_one_paragraph(pooled, tmp_path, trainval, test,
                                                            message):  # fmt: skip
  val = VAL[4:] if "whole alphabets" in message else VAL
  lists = write_lists(tmp_path, trainval, test, val)
  with pytest.raises(DataError, match=message):
    vinyals.load_vinyals(pooled[0], lists=lists, progress=False)


def test_the_split_is_recorded_and_refused_for_other_data(pooled, tmp_path):
  root, _ = pooled
  assert data_source(root, split="vinyals") == f"vinyals:{os.path.abspath(root)}"
  assert data_source(root) == os.path.abspath(root)
  with pytest.raises(DataError, match="is not an Omniglot folder"):
    load_data(str(tmp_path), split="vinyals")
  with pytest.raises(DataError, match="Unknown split 'koch'"):
    load_data(root, split="koch")


@pytest.mark.slow
def test_the_program_trains_on_the_pooled_split_and_reports_its_four_settings(
  pooled, tmp_path, monkeypatch, capsys
):
  from siamese_jax import cli, load_trained
  from siamese_jax.configs import OMNIGLOT
  from siamese_jax.programs import omniglot

  root, lists = pooled
  monkeypatch.setattr(vinyals, "LISTS", lists)
  argv = ["--data-dir", root, "--split", "vinyals", "--workdir", str(tmp_path / "w"),
          "--epochs", "1", "--classes-per-batch", "4", "--encoder", "mlp", "--hidden-sizes", "16",
          "--no-progress"]  # fmt: skip
  assert cli.run_main(omniglot.main, argv) == 0
  # The preset holds 5 alphabets out; the pooled split trains on trainval whole, at the
  # preset's 32x32, which its own validation kept over the published figures' 28.
  config = json.loads((tmp_path / "w/config.json").read_text())
  assert (config["holdout_groups"], config["image_size"]) == (0, 32)
  assert OMNIGLOT.holdout_groups == 5
  results = json.loads((tmp_path / "w/results.json").read_text())
  for setting in ("20way_1shot", "5way_1shot", "20way_5shot", "5way_5shot"):
    assert 0 < results[f"test_oneshot_{setting}"] <= 1, setting
  assert "5-way 5-shot" in capsys.readouterr().out
  config = json.loads((tmp_path / "w/config.json").read_text())
  assert config["data"] == f"vinyals:{os.path.abspath(root)}"
  model = load_trained(tmp_path / "w")
  assert model.load_data().test_images.shape == (180, 105, 105)  # the split, as recorded
  # Asked to validate, it holds out val.txt's alphabet: its 4 characters, 16 drawings.
  capsys.readouterr()
  argv = [*argv[:5], str(tmp_path / "v"), *argv[6:]]
  assert cli.run_main(omniglot.main, [*argv, "--holdout-groups", "1", "--image-size", "28"]) == 0
  results = json.loads((tmp_path / "v/results.json").read_text())
  assert results["val_retrieval_queries"] == 16 and "val_precision_at_1" in results
  assert json.loads((tmp_path / "v/config.json").read_text())["image_size"] == 28  # as given
  assert cli.run_main(omniglot.main, [*argv, "--holdout-groups", "2", "--overwrite"]) == 2
  assert "publishes its validation classes, 1 groups" in capsys.readouterr().err


@pytest.mark.slow
def test_the_program_refuses_the_split_on_data_it_does_not_fit(omniglot_dir, tmp_path):
  # The shipped lists name the real Omniglot's characters, which this small one lacks.
  r = run_module("experiments.omniglot", "--data-dir", omniglot_dir, "--split", "vinyals",
                 "--workdir", str(tmp_path / "w"))  # fmt: skip
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert "the trainval list names" in r.stderr and "which neither Omniglot set holds" in r.stderr
  assert not (tmp_path / "w").exists()


def test_the_lists_name_every_character_of_the_real_omniglot_once(real_omniglot_dir):
  from siamese_jax.data.omniglot import SPLITS, open_split

  drawings = {}  # (alphabet, character) -> drawings, from the zips' names alone
  for split in SPLITS:
    for name in open_split(real_omniglot_dir, split).names():
      alphabet, character, _ = name.split("/")
      drawings[(alphabet, character)] = drawings.get((alphabet, character), 0) + 1
  listed = [{(a, c) for a, c, _ in vinyals.read_class_list(os.path.join(vinyals.LISTS, f))}
            for f in ("trainval.txt", "test.txt")]  # fmt: skip
  assert listed[0] | listed[1] == set(drawings) and len(drawings) == 1623
  assert sum(drawings[c] for c in listed[0]) == 24000  # the training split's images
  assert 4 * sum(drawings[c] for c in listed[1]) == 33840  # the test split's, turned four ways
