"""Omniglot end to end: the experiment, load_trained on raw PNG arrays, the official-runs CLI."""

import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from siamese_jax import Config, load_trained
from siamese_jax.configs import OMNIGLOT
from siamese_jax.data.omniglot import load_omniglot
from siamese_jax.sampling import sampler_name

from conftest import run_module, write_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def omniglot_run(omniglot_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run") / "w")
  r = run_module(
    "experiments.omniglot", "--data-dir", omniglot_dir, "--workdir", workdir,
    "--epochs", "2", "--classes-per-batch", "8", "--holdout-groups", "1", "--hidden-sizes", "16",
    "--no-rotations",  # x4 the steps; tests/test_pk.py trains with rotations
    "--no-progress",
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  return workdir, r.stdout


def test_the_experiment_trains_and_reports_one_shot_accuracy(omniglot_run):
  workdir, stdout = omniglot_run
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  assert (config["image_size"], config["invert"], config["resize_filter"]) == (32, True, "box")
  assert config["encoder"] == "conv4" and config["loss"] == OMNIGLOT.loss
  assert sampler_name(Config.from_dict(config)) == "pk"
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for k in ("20way_1shot", "5way_1shot", "20way_5shot"):
    assert 0 <= results[f"test_oneshot_{k}"] <= 1
    assert results[f"test_oneshot_{k}_ci95"] > 0
  assert results["test_oneshot_episodes"] == 1000
  assert results["image_shape"] == [32, 32]
  assert "* One-shot (test classes, never trained on): 20-way 1-shot" in stdout
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    epochs = [json.loads(line) for line in f]
  assert len(epochs) == 2 and "val_accuracy" in epochs[0]


def test_load_trained_embeds_the_pngs_as_shipped(omniglot_run, omniglot_dir):
  workdir, _ = omniglot_run
  model = load_trained(workdir)
  raw = load_omniglot(omniglot_dir, progress=False).test_images[:10]  # uint8 0 ink / 255 paper
  as_bool = raw == 255  # as PIL reads the 1-bit PNGs
  e = model.embed(as_bool)
  assert e.shape == (10, 16)
  np.testing.assert_array_equal(e, model.embed(raw))
  # What training saw: the run's own preprocessing, not the raw pixels.
  from siamese_jax.data.preprocess import preprocess_images

  x = preprocess_images(raw, model.config)
  assert x.shape == (10, 32, 32) and x[:, 0, 0].max() == 0  # paper is dark
  with pytest.raises(Exception, match="bool or uint8"):
    model.embed(raw.astype(np.float32) / 255)


def test_distance_preprocesses_once(omniglot_run, omniglot_dir):
  # distance(a, b) is the distance of embed(a) and embed(b): the run's
  # preprocessing (resize, invert) applied once, not twice.
  model = load_trained(omniglot_run[0])
  raw = load_omniglot(omniglot_dir, progress=False).test_images[:6]
  e = model.embed(raw)
  want = np.sqrt(np.maximum(((e[:3] - e[3:]) ** 2).sum(1), 1e-7))
  np.testing.assert_allclose(model.distance(raw[:3], raw[3:]), want, rtol=1e-5)


def test_compare_reads_omniglot_pngs_as_shipped(omniglot_run, omniglot_dir):
  # Omniglot's own 105x105 1-bit PNGs, as experiments.oneshot reads them.
  pngs = sorted(glob.glob(os.path.join(omniglot_dir, "images_evaluation", "*", "*", "*.png")))
  r = run_module("experiments.compare", "--workdir", omniglot_run[0], pngs[0], pngs[1])
  assert r.returncode == 0, r.stderr
  model = load_trained(omniglot_run[0])
  a, b = (np.asarray(Image.open(p)) for p in pngs[:2])
  d = float(model.distance(a[None], b[None])[0])
  assert f"distance  {d:.4f}" in r.stdout


def test_official_runs_cli(omniglot_run, tmp_path):
  workdir, _ = omniglot_run
  root, _ = write_runs(str(tmp_path / "all_runs"), count=20)
  out = str(tmp_path / "scores.json")
  r = run_module("experiments.oneshot", "--workdir", workdir, "--runs", root, "--json", out)
  assert r.returncode == 0, r.stderr
  assert "run20:" in r.stdout and "mean accuracy over 20 runs" in r.stdout
  with open(out) as f:
    scores = json.load(f)
  assert 0 <= scores["mean_accuracy"] <= 1 and len(scores["runs"]) == 20
  os.unlink(os.path.join(root, "run05", "training", "class11.png"))
  r = run_module("experiments.oneshot", "--workdir", workdir, "--runs", root)
  assert r.returncode == 1
  assert r.stderr.startswith("error: ") and "run05/training/class11.png is missing" in r.stderr
  assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_omniglot_seeds_through_the_one_loop(omniglot_dir, tmp_path, capsys):
  from siamese_jax import Config, train_and_evaluate
  from siamese_jax.data.omniglot import load_omniglot

  config = Config(
    epochs=1, batch_size=8, encoder="conv4", hidden_sizes=(8, 16), final_relu=False,
    dropout=0.0, pairs="fresh", negatives="mixed", augment="affine", image_size=28,
    invert=True, holdout_groups=1, optimizer="adam",
  )  # fmt: skip
  data = load_omniglot(omniglot_dir, progress=False)
  summary = train_and_evaluate(config, tmp_path / "s", data, seeds=[0, 1], plots=False)
  assert "test_oneshot_20way_1shot" in summary["results"]
  single = train_and_evaluate(config, tmp_path / "one", data, plots=False)
  with open(tmp_path / "s" / "seed_0" / "results.json") as f:
    seed0 = json.load(f)
  # Model 0 of the stack has the plain run's data: the same held-out
  # alphabet, pairs and episodes. Its numbers are not bitwise the plain
  # run's: two models on one device train vmapped, whose matmuls round
  # differently, and max-pooling turns a near-tie the other way
  # (docs/seeds-and-sweeps.md).
  for k in ("num_val_pairs", "num_test_pairs", "num_pairs_per_epoch", "test_oneshot_episodes"):
    assert seed0[k] == single[k]
  assert 0 < seed0["test_oneshot_20way_1shot"] < 1
  # benchmarks.tta scores the folder's ensemble on the held-out alphabet: at
  # shift 0 the figures the run recorded for it (no episodes: too few characters).
  from benchmarks import tta

  assert tta.main(["--workdir", str(tmp_path / "s"), "--shifts", "0,1", "--turns", "0,5",
                   "--data-dir", omniglot_dir]) == 0  # fmt: skip
  out = capsys.readouterr().out.splitlines()
  rows = [line.split(" | ") for line in out if line[:2] == "| " and line[2].isdigit()]
  ensemble = summary["ensemble"]
  assert ensemble["members"] == 2 and ensemble["val_oneshot_5way_1shot"] is None  # 4 a class
  assert [r[:2] for r in rows] == [["| 0", "0"], ["| 1", "0"], ["| 0", "5"], ["| 1", "5"]]
  assert rows[0][2:4] == ["n/a", "n/a"]
  assert float(rows[0][4]) == round(100 * ensemble["val_precision_at_1"], 2)


def test_the_figures(omniglot_run, tmp_path):
  workdir, _ = omniglot_run
  r = run_module("experiments.oneshot_figures", "--workdir", workdir, "--out", str(tmp_path))
  assert r.returncode == 0, r.stderr
  for name in ("episodes.png", "alphabet_map.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  r = run_module("experiments.oneshot_figures", "--workdir", workdir, "--alphabet", "Klingon")
  assert r.returncode == 1 and "no such evaluation alphabet; one of Alpha0_eva" in r.stderr


def test_figures_of_alphabets_smaller_than_the_way_are_one_paragraph(omniglot_run, tmp_path,
                                                                     monkeypatch, capsys):  # fmt: skip
  # Issue 32: evaluation alphabets of fewer than 20 characters (no 20-way episode) were a
  # traceback. `episodes` finds none in such data; here it is told so directly.
  from siamese_jax import cli
  from siamese_jax.programs import oneshot_figures

  workdir, _ = omniglot_run
  monkeypatch.setattr(oneshot_figures, "episodes", lambda *a, **k: None)
  rc = cli.run_main(oneshot_figures.main, ["--workdir", workdir, "--out", str(tmp_path)])
  err = capsys.readouterr().err
  assert rc == 1 and "no 20-way 1-shot episode can be drawn" in err and "Traceback" not in err
