"""Faults found from outside: each case, fixed and held (docs/reliability.md lists them).

The last test runs every program over bad input: a non-zero exit, one
paragraph naming the input, never a traceback.
"""

import json
import os
import shutil
import signal
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

import siamese_jax as sj
from siamese_jax import cli
from siamese_jax.core.errors import DataError, WorkdirError
from siamese_jax.core.files import WriteError, atomic_write_bytes
from siamese_jax.data.omniglot import load_omniglot
from siamese_jax.evaluation.oneshot import read_runs
from siamese_jax.losses.distances import nearest
from siamese_jax.recognition.index import SearchIndexError
from siamese_jax.rundir import checkpoint
from siamese_jax.rundir.metric_writers import JsonlWriter
from siamese_jax.rundir.workdir import clear_run, prepare_workdir, read_config, reconcile_metrics

from conftest import (
  checkpoint_state,
  jsonl,
  start_module,
  synthetic_mnist,
  write_mnist_dir,
  write_npz,
  write_omniglot,
  write_runs,
)


@pytest.fixture(scope="module")
def data():
  return synthetic_mnist()


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data):
  """A finished two-epoch MNIST-style run, its data folder, and a gallery of its images."""
  root = tmp_path_factory.mktemp("mnist_run")
  data_dir = write_mnist_dir(root / "data", data)
  workdir = root / "run"
  sj.train_and_evaluate(sj.Config(epochs=2, batch_size=32), workdir, data, plots=False)
  gallery = root / "gallery"
  for i in range(6):
    folder = gallery / f"digit{data.test_labels[i]}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.test_images[i]).save(folder / f"{i}.png")
  return str(workdir), data_dir, str(gallery)


def tiny_checkpoint(tmp_path, epoch=1):
  config = sj.Config(epochs=3, hidden_sizes=(8,))
  state = sj.create_train_state(jax.random.key(0), config)
  ckpt = checkpoint.Checkpoint(state, epoch, 0, {}, np.zeros(2, np.uint32), config, [["x\n"]])
  checkpoint.save(str(tmp_path), ckpt)
  return config, state


# Checkpoints that prove themselves -------------------------------------------


def test_a_flipped_byte_in_a_checkpoint_is_found(tmp_path):
  _, state = tiny_checkpoint(tmp_path)
  path = tmp_path / checkpoint.CHECKPOINT_NAME
  raw = bytearray(path.read_bytes())
  raw[-100] ^= 0x01  # inside the parameters
  path.write_bytes(bytes(raw))
  with pytest.raises(WorkdirError, match="sha256 does not match"):
    checkpoint.load(str(tmp_path), state)


def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(tmp_path, capsys):
  _, state = tiny_checkpoint(tmp_path, epoch=1)
  tiny_checkpoint(tmp_path, epoch=2)  # the first becomes checkpoint.prev.msgpack
  assert (tmp_path / checkpoint.PREVIOUS_NAME).exists()
  (tmp_path / checkpoint.CHECKPOINT_NAME).write_bytes(b"garbage")
  ckpt = checkpoint.load(str(tmp_path), state, fall_back=True)
  assert ckpt.epoch == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "resuming from the previous checkpoint" in err
  # A finished run's model never falls back to an older state.
  with pytest.raises(WorkdirError):
    checkpoint.load(str(tmp_path), state)


def test_when_no_checkpoint_verifies_resume_refuses_in_one_paragraph(tmp_path):
  _, state = tiny_checkpoint(tmp_path)
  tiny_checkpoint(tmp_path)
  for name in (checkpoint.CHECKPOINT_NAME, checkpoint.PREVIOUS_NAME):
    (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-10])
  with pytest.raises(WorkdirError) as e:
    checkpoint.load(str(tmp_path), state, fall_back=True)
  assert "No checkpoint" in str(e.value) and "\n" not in str(e.value)
  assert checkpoint.CHECKPOINT_NAME in str(e.value) and checkpoint.PREVIOUS_NAME in str(e.value)


def test_checkpoint_files_are_as_readable_as_metrics(tmp_path):
  tiny_checkpoint(tmp_path)
  JsonlWriter(tmp_path / "metrics.jsonl").write_scalars(1, {"loss": 1.0})
  mode = os.stat(tmp_path / checkpoint.CHECKPOINT_NAME).st_mode & 0o777
  assert mode == os.stat(tmp_path / "metrics.jsonl").st_mode & 0o777


@pytest.mark.slow
def test_a_corrupt_checkpoint_resumes_from_the_previous_bitwise(tmp_path, data):
  config = sj.Config(epochs=3, batch_size=32)
  sj.train_and_evaluate(config, tmp_path / "ref", data, plots=False)
  two = sj.Config(epochs=2, batch_size=32)
  sj.train_and_evaluate(two, tmp_path / "w", data, plots=False)
  ckpt = tmp_path / "w" / checkpoint.CHECKPOINT_NAME
  ckpt.write_bytes(ckpt.read_bytes()[:-7])  # epoch 2's checkpoint, cut short
  config_before = (tmp_path / "w/config.json").read_text()
  # The checkpoint is read and checked before anything is written: a resume
  # that fails (here: the data is other data) leaves config.json as it was.
  other = synthetic_mnist(seed=5)
  with pytest.raises(WorkdirError, match="other data"):
    sj.train_and_evaluate(config, tmp_path / "w", other, resume=True, plots=False)
  assert (tmp_path / "w/config.json").read_text() == config_before
  sj.train_and_evaluate(config, tmp_path / "w", data, resume=True, plots=False)
  assert jsonl(tmp_path / "w/metrics.jsonl") == jsonl(tmp_path / "ref/metrics.jsonl")
  assert checkpoint_state(tmp_path / "w" / checkpoint.CHECKPOINT_NAME) == checkpoint_state(
    tmp_path / "ref" / checkpoint.CHECKPOINT_NAME
  )
  assert json.loads((tmp_path / "w/config.json").read_text())["epochs"] == 3


# A history that cannot silently shrink ---------------------------------------


def test_a_lost_epoch_line_is_restored_exactly_from_the_checkpoint(tmp_path):
  lines = ['{"epoch": 1, "loss": 0.5}\n', '{"epoch": 2, "loss": 0.25}\n']
  path = tmp_path / "metrics.jsonl"
  path.write_text(lines[0] + '{"epoch": 2, "lo\n' + '{"epoch": 3, "loss": 0.1}\n')
  assert reconcile_metrics(str(path), 2, lines) == 1
  assert path.read_text() == "".join(lines)  # epoch 3 came after the checkpoint: gone
  path.write_text(lines[1])  # epoch 1 missing altogether
  assert reconcile_metrics(str(path), 2, lines) == 1
  assert path.read_text() == "".join(lines)


def test_a_lost_line_without_a_copy_is_refused_naming_file_and_epoch(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"epoch": 2, "loss": 0.25}\n')
  with pytest.raises(WorkdirError, match=r"metrics.jsonl lacks a readable line for epoch 1"):
    reconcile_metrics(str(path), 2, None)


# The workdir ------------------------------------------------------------------


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


def test_an_index_write_error_speaks_of_the_index(tmp_path):
  index = sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2])
  with pytest.raises(WriteError) as e:
    index.save(str(tmp_path / "no/such/dir/gallery.index"))
  assert "another path" in str(e.value) and "checkpoint" not in str(e.value)
  with pytest.raises(WriteError, match="--resume"):  # a run's file speaks of the run
    JsonlWriter(str(tmp_path / "no/such/metrics.jsonl")).write_scalars(1, {"loss": 1.0})


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


# Corrupt files ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_index_file_is_one_error(tmp_path, damage):
  path = str(tmp_path / "g.index")
  sj.Index.from_embeddings(np.eye(4, dtype=np.float32), [0, 1, 2, 3]).save(path)
  raw = bytearray(open(path, "rb").read())
  if damage == "truncate":
    raw = raw[: len(raw) // 2]
  else:
    raw[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)
  open(path, "wb").write(bytes(raw))
  with pytest.raises(SearchIndexError, match="g.index"):
    sj.load_index(path)


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


def test_runs_built_by_lake_runs_with_fewer_than_20_are_read(tmp_path):
  root, _ = write_runs(str(tmp_path / "runs"), count=5)
  assert [r.name for r in read_runs(root)] == [f"run0{i}" for i in range(1, 6)]


# Search order ---------------------------------------------------------------------


def test_search_results_are_sorted_by_the_distances_returned_with_them():
  # Near ties: the expansion ||q||^2 + ||g||^2 - 2 q.g rounds some of them
  # into the wrong order; the exact distances returned decide it.
  rng = np.random.default_rng(0)
  centre = rng.normal(size=(1, 64)).astype(np.float32) * 2.5  # norms ~20, as embeddings
  gallery = centre + rng.normal(size=(4000, 64)).astype(np.float32) * 0.05
  queries = centre + rng.normal(size=(200, 64)).astype(np.float32) * 0.05
  d, ids = (np.asarray(x) for x in nearest(queries, gallery, 10))
  assert (np.diff(d, axis=1) >= 0).all()
  exact = np.sqrt(((queries[:, None].astype(np.float64) - gallery[None]) ** 2).sum(-1))
  best = np.sort(exact, axis=1)[:, :10]
  # The k returned are the k nearest by the exact distance (to float32 rounding).
  np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), best, rtol=0, atol=2e-5)


# SIGTERM --------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_saves_says_how_to_resume_and_exits_143(tmp_path):
  data_dir = write_mnist_dir(tmp_path / "data", synthetic_mnist(n_train=6000, n_test=300))
  args = ["--data-dir", data_dir, "--epochs", "2", "--batch-size", "16", "--chunk-steps", "20",
          "--workdir", str(tmp_path / "w"), "--no-progress"]  # fmt: skip
  p = start_module("experiments.mnist_siamese", *args)
  while not os.path.exists(tmp_path / "w/metrics.jsonl"):  # into epoch 2
    assert p.poll() is None, p.communicate()
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 143, err
  assert "Stopped by SIGTERM" in err and "checkpoint saved" in err and "Traceback" not in err
  assert err.split("To resume: ")[1].strip().endswith("--resume")
  assert checkpoint.exists(str(tmp_path / "w"))
  rc = cli.run_main(__import__("experiments.mnist_siamese").mnist_siamese.main, [*args, "--resume"])
  assert rc == 0 and len(jsonl(tmp_path / "w/metrics.jsonl")) == 2


# Images -----------------------------------------------------------------------------


def save(path, pixels, mode=None, fmt=None):
  img = Image.fromarray(pixels)
  (img.convert(mode) if mode else img).save(path, format=fmt)
  return str(path)


@pytest.mark.slow
def test_compare_reads_any_image_through_the_runs_input(tmp_path, mnist_run, data, capsys):
  from experiments import compare

  workdir = mnist_run[0]
  img = np.zeros((28, 28), np.uint8)  # a light stroke on black, as MNIST draws a 1
  img[4:24, 12:16] = 255
  paths = {
    "png": save(tmp_path / "a.png", img),
    "jpeg": save(tmp_path / "c.jpg", img, "RGB", "JPEG"),  # colour JPEG
    "1bit": save(tmp_path / "b.png", img > 127, None),  # 1-bit PNG
    "big": save(tmp_path / "d.bmp", np.kron(img, np.ones((2, 2), np.uint8))),  # 56x56 BMP
  }
  for kind, path in paths.items():
    assert cli.run_main(compare.main, ["--workdir", workdir, paths["png"], path]) == 0, kind
    out = capsys.readouterr()
    assert "distance" in out.out and "warning" not in out.err, (kind, out.err)
  # Dark ink on white is the other way round from MNIST's: a warning naming it.
  inverted = save(tmp_path / "inv.png", 255 - img)
  assert cli.run_main(compare.main, ["--workdir", workdir, paths["png"], inverted]) == 0
  err = capsys.readouterr().err
  assert "inv.png" in err and "other way round" in err


@pytest.mark.slow
def test_a_gallery_skips_non_images_and_names_an_unreadable_one(tmp_path, mnist_run, capsys):
  from experiments import recognize

  workdir, _, gallery = mnist_run
  query = os.path.join(gallery, sorted(os.listdir(gallery))[0])
  query = os.path.join(query, os.listdir(query)[0])
  stray = os.path.join(gallery, sorted(os.listdir(gallery))[0], "README.txt")
  open(stray, "w").write("notes")
  try:
    assert cli.run_main(recognize.main, ["--workdir", workdir, "--gallery", gallery, query]) == 0
    err = capsys.readouterr().err
    assert "README.txt" in err and err.count("that are not images") == 1
    broken = os.path.join(os.path.dirname(stray), "broken.png")
    open(broken, "wb").write(b"\x89PNG\r\n\x1a\n not really")
    assert cli.run_main(recognize.main, ["--workdir", workdir, "--gallery", gallery, query]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
  finally:
    for f in (stray, os.path.join(os.path.dirname(stray), "broken.png")):
      if os.path.exists(f):
        os.unlink(f)


@pytest.mark.slow
def test_embed_embeds_your_own_images(tmp_path, mnist_run, data):
  from experiments import embed

  folder = tmp_path / "mine"
  folder.mkdir()
  for i in range(3):
    save(folder / f"img{i}.png", data.test_images[i])
  out = tmp_path / "out"
  argv = ["--workdir", mnist_run[0], "--images", str(folder), "--out", str(out)]
  assert cli.run_main(embed.main, argv) == 0
  emb = np.load(out / "embeddings.npy")
  np.testing.assert_allclose(emb, sj.load_trained(mnist_run[0]).embed(data.test_images[:3]),
                             atol=1e-6)  # fmt: skip
  assert (out / "labels.tsv").read_text().split() == ["img0.png", "img1.png", "img2.png"]


@pytest.mark.slow
def test_the_default_runs_val_figures_are_the_test_pairs(mnist_run):
  # As in the Keras original, whose validation_data is its test pairs.
  last = jsonl(os.path.join(mnist_run[0], "metrics.jsonl"))[-1]
  results = json.loads(open(os.path.join(mnist_run[0], "results.json")).read())
  assert last["val_loss"] == pytest.approx(results["test_loss"], rel=1e-6)
  assert last["val_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-7)


def test_docs_close_every_code_fence():
  docs = os.path.join(os.path.dirname(__file__), "..", "docs")
  for name in sorted(os.listdir(docs)):
    if name.endswith(".md"):
      text = open(os.path.join(docs, name)).read()
      assert text.count("```") % 2 == 0, name


# Every program, over bad input --------------------------------------------------------

MISSING = "/nonexistent/siamese_jax_input"
PROGRAMS = [
  # (module, argv, exit code, text the message must hold); {run}, {data}, {gallery},
  # {tmp} and {bad_index} are filled in below.
  ("experiments.mnist_siamese", ["--data-dir", MISSING, "--workdir", "{tmp}/w"], 1, MISSING),
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--epochs", "0"], 2, "--epochs"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/nullcfg", "--resume"],
    1,
    "config.json",
  ),  # fmt: skip
  ("experiments.omniglot", ["--data-dir", MISSING, "--workdir", "{tmp}/o"], 1, MISSING),
  ("experiments.embedding_2d", ["--data-dir", MISSING, "--workdir", "{tmp}/e"], 1, MISSING),
  ("experiments.compare", ["--workdir", "{run}", MISSING + ".png", MISSING + ".png"], 1, MISSING),
  ("experiments.compare", ["--workdir", MISSING, "a.png", "b.png"], 1, MISSING),
  (
    "experiments.embed",
    ["--workdir", "{run}", "--images", MISSING, "--out", "{tmp}/x"],
    1,
    MISSING,
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--threshold", "nan"],
    2,
    "--threshold",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--threshold", "-1"],
    2,
    "--threshold",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--precision", "0.9"],
    2,
    "--precision",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--curve", "c.png"],
    2,
    "--curve",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{bad_index}", "q.png", "--index-backend", "exact"],
    2,
    "--index-backend",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "{query}", "--k", "99"],
    2,
    "--k 99",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{bad_index}", "{query}"],
    1,
    "bad.index",
  ),  # fmt: skip
  ("experiments.open_set", ["--workdir", MISSING], 1, MISSING),
  ("experiments.plot_curves", [MISSING], 1, MISSING),
  ("experiments.plot_curves", ["{tmp}/nullcfg"], 1, "config.json"),
  ("experiments.benchmark", ["--data-dir", MISSING], 1, MISSING),
  ("experiments.keras_reference", ["--data-dir", MISSING], 1, MISSING),
  ("experiments.oneshot", ["--workdir", "{run}", "--runs", MISSING], 1, "MNIST-style run"),
  ("experiments.oneshot", ["--workdir", MISSING, "--runs", MISSING], 1, MISSING),
  ("experiments.oneshot_figures", ["--workdir", MISSING], 1, MISSING),
  ("benchmarks.lake_runs", ["--data-dir", MISSING, "--out", "{tmp}/runs"], 1, MISSING),
  ("benchmarks.omniglot_step", ["--data-dir", MISSING], 1, MISSING),
  ("benchmarks.processes", ["--data-dir", MISSING], 1, MISSING),
  ("benchmarks.processes", ["--data-dir", "{data}", "--seeds", "0,x"], 2, "0,x"),
  ("benchmarks.search", ["--backends", "exact,bogus"], 2, "bogus"),
  # Issue 32: integers a run turns into keys or indices.
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--seed", "1099511627776"], 2, "--seed"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--seed", "18446744073709551616"],
    2,
    "--seed",
  ),  # fmt: skip
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--seeds", "0,4294967296"], 2, "--seeds"),
  ("experiments.mnist_siamese", ["--data-dir", "{big_label}", "--workdir", "{tmp}/l"], 1, "label"),
  ("experiments.open_set", ["--workdir", "{run}", "--per-class", "-1"], 2, "--per-class"),
  ("experiments.open_set", ["--workdir", "{run}", "--calibrate-n", "-5"], 2, "--calibrate-n"),
  ("experiments.open_set", ["--workdir", "{run}", "--seed", "-1"], 2, "--seed"),
  ("experiments.oneshot_figures", ["--workdir", "{run}", "--episodes", "0"], 2, "--episodes"),
  # Issue 32: outputs checked before the work, not after it.
  (
    "experiments.oneshot",
    ["--workdir", "{run}", "--runs", MISSING, "--json", "{tmp}/no/s.json"],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.open_set",
    ["--workdir", "{run}", "--json", "{tmp}/no/o.json"],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.recognize",
    [
      "--workdir",
      "{run}",
      "--gallery",
      "{gallery}",
      "q.png",
      "--calibrate-on",
      "{gallery}",
      "--curve",
      "{tmp}/no/c.png",
    ],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.embed",
    ["--workdir", "{run}", "--split", "test", "--out", "{tmp}/bad.index/x"],
    2,
    "bad.index is a file, not a folder",
  ),
  ("experiments.plot_curves", ["{run}", "--out", "{tmp}"], 2, "is a folder"),
  # Issue 32: sizes the flags allow that no encoder or machine takes; a results.json cut short.
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/c8", "--encoder", "conv4", "--image-size", "8"],
    2,
    "--image-size",
  ),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/h", "--hidden-sizes", "100000000"],
    2,
    "--hidden-sizes",
  ),
  ("experiments.compare", ["--workdir", "{cut}", "a.png", "b.png"], 1, "results.json"),
  ("experiments.compare", ["--workdir", "{empty}", "a.png", "b.png"], 1, "holds no threshold"),
  ("experiments.plot_curves", ["{nokey}"], 1, "line 1 has no train_loss"),
  # Issue 32: bombs, impossible saved fields, a config edited by hand.
  ("experiments.compare", ["--workdir", "{run}", "{bomb}", "{bomb}"], 1, "decompression bomb"),
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{neg_index}", "{query}"],
    1,
    "not a distance > 0",
  ),
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{str_index}", "{query}"],
    1,
    "is not a number",
  ),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{idx_bomb}", "--workdir", "{tmp}/ib"],
    1,
    "header declares shape (3000000, 28, 28)",
  ),
  (
    "experiments.mnist_siamese",
    [
      "--data-dir",
      "{data}",
      "--workdir",
      "{edited}",
      "--resume",
      "--margin",
      "2",
      "--batch-size",
      "32",
      "--epochs",
      "3",
    ],
    1,
    "margin (run: 1.0, now: 2.0)",
  ),
  # Issue 32: values that cannot work, refused by name or told apart from the learning rate.
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--rmsprop-eps", "0"], 2, "--rmsprop-eps"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/m", "--margin", "1e30", "--epochs", "1"],
    1,
    "not the learning rate",
  ),  # fmt: skip
  (
    "experiments.mnist_siamese",
    [
      "--data-dir",
      "{data}",
      "--workdir",
      "{tmp}/b",
      "--loss",
      "multi-similarity",
      "--ms-beta",
      "1e30",
      "--classes-per-batch",
      "4",
      "--samples-per-class",
      "4",
      "--epochs",
      "1",
    ],
    1,
    "--ms-beta 1e+30",
  ),  # fmt: skip
]


@pytest.mark.slow
def test_every_program_refuses_bad_input_in_one_paragraph(tmp_path, mnist_run, capsys):
  run, data_dir, gallery = mnist_run
  (tmp_path / "nullcfg").mkdir()
  (tmp_path / "nullcfg/config.json").write_text("null")
  (tmp_path / "nullcfg/metrics.jsonl").write_text("")
  (tmp_path / "bad.index").write_bytes(b"PK\x03\x04 cut short")
  data = synthetic_mnist(n_train=100, n_test=20)
  labels = data.train_labels.astype(np.int64)
  labels[0] = 2**32 + 1  # would wrap into class 1 as int32
  big_label = write_npz(tmp_path / "big_label.npz", data, y_train=labels)
  for name, text in (("cut", '{"threshold'), ("empty", "{}")):
    shutil.copytree(run, tmp_path / name)
    (tmp_path / name / "results.json").write_text(text)
  shutil.copytree(run, tmp_path / "edited")
  edited = json.loads((tmp_path / "edited" / "config.json").read_text())
  (tmp_path / "edited" / "config.json").write_text(json.dumps({**edited, "margin": 2.0}))
  bomb = _png_header_only(tmp_path / "bomb.png", 12_000, 12_000)
  for name, field, value in (("neg_index", "threshold", -1.0), ("str_index", "version", "x")):
    path = str(tmp_path / f"{name}.index")
    sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=0.5).save(path)
    with np.load(path, allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
    with open(path, "wb") as f:
      np.savez(f, **{**fields, field: np.asarray(value)})
  idx_bomb = write_mnist_dir(tmp_path / "idx_bomb", data)
  head = b"\x00\x00\x08\x03" + np.array([3_000_000, 28, 28], ">u4").tobytes()
  with open(os.path.join(idx_bomb, "train-images-idx3-ubyte.gz"), "wb") as f:
    f.write(__import__("gzip").compress(head + bytes(1000)))
  shutil.copytree(run, tmp_path / "nokey")
  (tmp_path / "nokey" / "metrics.jsonl").write_text('{"epoch": 1, "train_accuracy": 0.5}\n')
  first = os.path.join(gallery, sorted(os.listdir(gallery))[0])
  fill = {"{run}": run, "{data}": data_dir, "{gallery}": gallery, "{tmp}": str(tmp_path),
          "{big_label}": str(big_label), "{cut}": str(tmp_path / "cut"),
          "{empty}": str(tmp_path / "empty"), "{nokey}": str(tmp_path / "nokey"),
          "{edited}": str(tmp_path / "edited"), "{bomb}": bomb, "{idx_bomb}": idx_bomb,
          "{neg_index}": str(tmp_path / "neg_index.index"),
          "{str_index}": str(tmp_path / "str_index.index"),
          "{bad_index}": str(tmp_path / "bad.index"),
          "{query}": os.path.join(first, os.listdir(first)[0])}  # fmt: skip
  failures = []
  for module, argv, code, text in PROGRAMS:
    args = []
    for a in argv:
      for k, v in fill.items():
        a = a.replace(k, v)
      args.append(a)
    program = __import__(module, fromlist=["main"])
    try:
      rc = cli.run_main(program.main, args)
    except SystemExit as e:  # argparse's usage errors
      rc = e.code
    err = capsys.readouterr().err
    text = text.replace("{tmp}", str(tmp_path))
    if rc != code or text not in err or "Traceback" in err or not err.strip():
      failures.append(f"{module} {' '.join(args)}: exit {rc} (want {code}), stderr {err!r}")
  assert failures == [], "\n".join(failures)


# Images of every depth, and bombs (issue 32) ---------------------------------------


def _png_header_only(path, width, height):
  """A PNG whose header declares width x height 1-bit pixels, with one tiny data chunk."""
  import struct
  import zlib

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
  raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
  open(path, "wb").write(raw + chunk(b"IEND", b""))
  return str(path)


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

  path = _png_header_only(tmp_path / "bomb.png", 20_000, 20_000)  # past PIL's own limit
  with pytest.raises(DataError, match=r"bomb\.png: .*decompression bomb"):
    read_image(path)
  below_pil = _png_header_only(tmp_path / "b12k.png", 12_000, 12_000)  # past ours alone
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


def test_a_zip_member_that_would_inflate_past_any_file_of_the_data_is_refused(tmp_path):
  from siamese_jax.data.archive import MAX_MEMBER_BYTES, Archive

  with zipfile.ZipFile(tmp_path / "z.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("big.png", b"\0" * (MAX_MEMBER_BYTES + 1))
  with pytest.raises(DataError, match="would inflate to 67,108,865 bytes.*zip bomb"):
    Archive(str(tmp_path / "z.zip")).read("big.png")


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


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("threshold", -1.0, "saved threshold -1.0 is not a distance > 0"),
    ("threshold", np.inf, "saved threshold inf is not a distance > 0"),
    ("version", "two", "its version .* is not a number"),
  ],
)
def test_a_saved_index_with_impossible_fields_is_one_error(tmp_path, field, value, message):
  path = str(tmp_path / "g.index")
  sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=0.5).save(path)
  with np.load(path, allow_pickle=False) as z:
    fields = {k: z[k] for k in z.files}
  fields[field] = np.asarray(value)
  with open(path, "wb") as f:
    np.savez(f, **fields)
  with pytest.raises(SearchIndexError, match=message):
    sj.load_index(path)
  with pytest.raises(SearchIndexError, match="a distance > 0"):
    sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=float("nan"))


def test_an_index_of_another_width_is_blamed_on_the_index():
  index = sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2])
  with pytest.raises(SearchIndexError, match="queries are 2-wide.*index holds 3-wide.*another"):
    index.search(np.zeros((4, 2), np.float32))
