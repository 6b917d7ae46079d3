"""The run directory: reuse, overwrite, what a run proves it wrote, and writes that fail."""

import os

import numpy as np
import pytest

import siamese_jax as sj
from siamese_jax.core.errors import WorkdirError
from siamese_jax.core.files import WriteError, atomic_write_bytes
from siamese_jax.rundir.workdir import clear_run, prepare_workdir, read_config

from conftest import synthetic_mnist


def test_overwrite_removes_every_model_directory_an_earlier_run_left(tmp_path):
  config = sj.Config().to_json()
  for d in ("seed_0", "seed_7", "margin_2/seed_0"):
    (tmp_path / d).mkdir(parents=True)
    (tmp_path / d / "config.json").write_text(config)
    (tmp_path / d / "results.json").write_text("{}")
  (tmp_path / "tensorboard").mkdir()
  (tmp_path / "config.json").write_text(config)
  for f in ("summary.json", "checkpoint.msgpack", "checkpoint.prev.msgpack"):
    (tmp_path / f).write_text("x")
  (tmp_path / "notes.txt").write_text("mine")  # not the run's: kept
  (tmp_path / "seeds_of_doubt").mkdir()  # not a model directory: kept
  clear_run(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["notes.txt", "seeds_of_doubt"]


def test_overwrite_keeps_the_users_own_folders_whatever_their_names(tmp_path):
  # Issue 32: these were removed because their names match a model directory's.
  for d in ("seed_photos", "margin_notes", "learning_rate_study", "tensorboard"):
    (tmp_path / d).mkdir()
    (tmp_path / d / "results.json").write_text("{}")  # even a run-like file name
  (tmp_path / "seed_1").mkdir()  # a model directory's name, with the user's file in it
  (tmp_path / "seed_1" / "photo.png").write_bytes(b"png")
  clear_run(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [
    "learning_rate_study", "margin_notes", "seed_1", "seed_photos", "tensorboard"
  ]  # fmt: skip
  assert (tmp_path / "seed_photos" / "results.json").exists()
  assert (tmp_path / "seed_1" / "photo.png").exists()
  # A real run's checkpoint proves a run, its config.json aside.
  (tmp_path / "margin_notes" / "seed_0").mkdir()
  ckpt = tmp_path / "margin_notes" / "seed_0" / "checkpoint.msgpack"
  ckpt.write_bytes(b"siamese_jax checkpoint v2 sha256 " + b"0" * 64)
  clear_run(str(tmp_path))
  assert sorted(os.listdir(tmp_path / "margin_notes")) == ["results.json"]


def test_swept_values_that_print_alike_get_folders_of_their_own():
  from siamese_jax.training.ensemble import plan_models

  plan = plan_models(sj.Config(), "w", sweep=("margin", [1.0000001, 1.0000002, 0.5]))
  assert len(set(plan.dirs)) == 3
  assert plan.dirs[:2] == ("w/margin_1.0000001/seed_0", "w/margin_1.0000002/seed_0")
  assert plan.dirs[2] == "w/margin_0.5/seed_0"  # names that were exact stay as they were


def test_a_run_that_never_finished_an_epoch_does_not_block_its_workdir(tmp_path):
  config = sj.Config(epochs=2)
  prepare_workdir(str(tmp_path), config, resume=False, overwrite=False)
  # Diverged in epoch 1: config.json only. The same command, or a corrected one, may start.
  prepare_workdir(str(tmp_path), sj.Config(epochs=2, learning_rate=1e-4), resume=False,
                  overwrite=False)  # fmt: skip
  assert read_config(str(tmp_path / "config.json")).learning_rate == 1e-4
  (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
  with pytest.raises(WorkdirError, match="already holds"):
    prepare_workdir(str(tmp_path), config, resume=False, overwrite=False)


def test_a_run_is_matched_to_its_data_by_fingerprint_not_path(tmp_path, data):
  a = sj.Config(data="/old/place", data_fingerprint=data.fingerprint())
  prepare_workdir(str(tmp_path), a, resume=False, overwrite=False)
  (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
  moved = sj.Config(data="/new/place", data_fingerprint=data.fingerprint())
  assert prepare_workdir(str(tmp_path), moved, resume=True, overwrite=False)  # rewrite later
  other = synthetic_mnist(seed=1).fingerprint()
  same_path = sj.Config(data="/old/place", data_fingerprint=other)
  with pytest.raises(WorkdirError, match="other data") as e:
    prepare_workdir(str(tmp_path), same_path, resume=True, overwrite=False)
  assert data.fingerprint() in str(e.value) and other in str(e.value)


@pytest.mark.parametrize("text", ["null", "[1, 2]", '"epochs"'])
def test_a_config_json_that_is_not_an_object_is_one_error(tmp_path, text):
  (tmp_path / "config.json").write_text(text)
  with pytest.raises(WorkdirError, match="not an object of config fields"):
    read_config(str(tmp_path / "config.json"))


def test_a_workdir_that_is_a_file_is_called_a_file(tmp_path):
  from siamese_jax.rundir.workdir import locked

  (tmp_path / "f").write_text("x")
  for path, said in ((tmp_path / "f", "is a file"), (tmp_path / "f/run", "lies under the file")):
    with pytest.raises(WorkdirError, match=said), locked(str(path)):
      pass


def test_an_output_write_error_speaks_of_the_output(tmp_path):
  # oneshot --json, open_set --json, embed --out, recognize --curve: not the run's files.
  for write in (
    lambda p: atomic_write_bytes(p, b"x"),
    lambda p: sj.plots.calibration_curve(
      sj.calibrate(sj.Index.from_embeddings(np.eye(2, dtype=np.float32), [0, 1]),
                   np.eye(2, dtype=np.float32), [0, 1]), p),
  ):  # fmt: skip
    with pytest.raises(WriteError) as e:
      write(str(tmp_path / "no/such/dir/out.json"))
    assert "another path" in str(e.value)
    assert "checkpoint" not in str(e.value) and "--resume" not in str(e.value)
