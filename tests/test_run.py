"""End to end: a run into tmp_path, the files it writes, and the CLI."""

import dataclasses
import json
import os
import sys

import pytest

from siamese_jax import Config, train_and_evaluate
from siamese_jax import cli as sj_cli

from conftest import is_png, results, run_module, write_mnist_dir

EPOCH_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds"}
TIMING = {"epoch_seconds", "total_seconds"}


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def without_timing(d):
  return {k: v for k, v in d.items() if k not in TIMING}


@pytest.mark.slow
def test_one_epoch_writes_config_metrics_results(tmp_path, small_mnist, capsys):
  config = Config(epochs=1, batch_size=32)
  results = train_and_evaluate(config, tmp_path / "run", small_mnist, chunk_steps=10)
  run = tmp_path / "run"
  # The run's config, with what the data is (not where it lies) recorded.
  saved = Config.from_dict(json.loads((run / "config.json").read_text()))
  assert saved == dataclasses.replace(config, data_fingerprint=small_mnist.fingerprint())
  (line,) = read_jsonl(run / "metrics.jsonl")
  assert set(line) == EPOCH_KEYS and line["epoch"] == 1
  assert 0 <= line["val_accuracy"] <= 1 and line["epoch_seconds"] > 0
  saved = json.loads((run / "results.json").read_text())
  assert saved == results
  for k in ("train_accuracy", "test_accuracy", "epochs", "seed", "total_seconds"):
    assert k in saved
  assert 0 <= saved["test_accuracy"] <= 1 and saved["epochs"] == 1 and saved["seed"] == 0
  out = capsys.readouterr().out
  assert "epoch 1/1" in out and "* Accuracy on test set:" in out


@pytest.mark.slow
def test_same_seed_same_files(tmp_path, small_mnist):
  config = Config(epochs=2, batch_size=32, seed=3)
  for name in ("a", "b"):
    train_and_evaluate(config, tmp_path / name, small_mnist, chunk_steps=6)
  a, b = read_jsonl(tmp_path / "a/metrics.jsonl"), read_jsonl(tmp_path / "b/metrics.jsonl")
  assert [without_timing(x) for x in a] == [without_timing(x) for x in b]
  ra = json.loads((tmp_path / "a/results.json").read_text())
  rb = json.loads((tmp_path / "b/results.json").read_text())
  assert without_timing(ra) == without_timing(rb)
  # Another seed gives another run.
  train_and_evaluate(Config(epochs=2, batch_size=32, seed=4), tmp_path / "c", small_mnist)
  c = read_jsonl(tmp_path / "c/metrics.jsonl")
  assert [without_timing(x) for x in a] != [without_timing(x) for x in c]


@pytest.mark.slow
def test_results_do_not_depend_on_chunking(tmp_path, small_mnist):
  config = Config(epochs=1, batch_size=32)
  train_and_evaluate(config, tmp_path / "a", small_mnist, chunk_steps=1)
  train_and_evaluate(config, tmp_path / "b", small_mnist, chunk_steps=100)
  a, b = read_jsonl(tmp_path / "a/metrics.jsonl"), read_jsonl(tmp_path / "b/metrics.jsonl")
  assert [without_timing(x) for x in a] == [without_timing(x) for x in b]


def cli(*args):
  return run_module("experiments.mnist_siamese", *args)


@pytest.mark.slow
def test_cli_runs_end_to_end(tmp_path, small_mnist):
  data_dir = write_mnist_dir(tmp_path / "data", small_mnist)
  args = ("--data-dir", data_dir, "--epochs", "2", "--batch-size", "16", "--margin", "1.5")
  r = run_module("experiments.mnist_siamese", *args, "--workdir", str(tmp_path / "w"), plots=True)
  assert r.returncode == 0, r.stderr
  assert "* Accuracy on test set:" in r.stdout
  assert json.loads((tmp_path / "w/config.json").read_text())["margin"] == 1.5
  assert len(read_jsonl(tmp_path / "w/metrics.jsonl")) == 2
  assert is_png(tmp_path / "w/distances.png")
  # --no-plots: the same run, without the figure.
  r = run_module("experiments.mnist_siamese", *args, "--workdir", str(tmp_path / "n"),
                 "--no-plots", plots=True)  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert not (tmp_path / "n/distances.png").exists()
  assert results(tmp_path / "n/results.json") == results(tmp_path / "w/results.json")


@pytest.mark.slow
@pytest.mark.parametrize(
  "args, message",
  [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--batch-size", "0"], "--batch-size=0 is invalid"),
    (["--dropout", "1.5"], "--dropout=1.5 is invalid"),
    (["--margin", "-1"], "--margin=-1.0 is invalid"),
    (["--learning-rate", "nan"], "--learning-rate=nan is invalid"),
  ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
  r = cli("--workdir", str(tmp_path / "w"), *args)
  assert r.returncode == 2, r.stderr
  assert message in r.stderr and "usage:" in r.stderr
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  "preset, args, named",
  [
    ("MNIST", ["--loss", "supcon", "--batch-size", "128"], ["--batch-size"]),
    ("MNIST", ["--loss", "supcon", "--margin", "2"], ["--margin"]),
    ("MNIST", ["--loss", "triplet-hard", "--temperature", "0.2"], ["--temperature"]),
    ("MNIST", ["--classes-per-batch", "8", "--rotations"], ["--classes-per-batch", "--rotations"]),
    ("MNIST", ["--optimizer", "adam", "--rmsprop-eps", "1e-6"], ["--rmsprop-eps"]),
    ("MNIST", ["--augment-strength", "0.5"], ["--augment-strength"]),
    ("MNIST", ["--norm-over", "image"], ["--norm-over"]),
    ("OMNIGLOT", ["--loss", "contrastive", "--no-rotations"], ["--rotations"]),
  ],
)
def test_a_flag_the_run_would_not_read_is_refused_by_name(preset, args, named, capsys):
  import siamese_jax.configs

  parser = sj_cli.make_parser("p", "d", getattr(siamese_jax.configs, preset))
  with pytest.raises(SystemExit) as e:
    sj_cli.config_from_args(parser, parser.parse_args(args))
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert all(f"{flag} does not apply" in err or f"{flag}=" in err for flag in named), err


@pytest.mark.parametrize(
  "preset, args",
  [
    ("MNIST", ["--loss", "supcon", "--temperature", "0.05", "--optimizer", "adam"]),
    ("MNIST", ["--loss", "batch-contrastive", "--margin", "0.5"]),
    ("MNIST", ["--augment", "affine", "--augment-strength", "0.5"]),
    ("OMNIGLOT", ["--norm-over", "image", "--ema-decay", "0.999"]),
    # The preset's rotations do not apply to pairs: they fall back, unasked.
    ("OMNIGLOT", ["--loss", "contrastive", "--pairs", "fresh", "--optimizer", "rmsprop"]),
  ],
)
def test_flags_that_apply_are_taken_and_a_presets_unread_settings_fall_back(preset, args):
  import siamese_jax.configs

  parser = sj_cli.make_parser("p", "d", getattr(siamese_jax.configs, preset))
  config = sj_cli.config_from_args(parser, parser.parse_args(args))
  assert config.rotations is False or config.loss != "contrastive"


def test_the_refusal_names_every_flag_in_one_paragraph(capsys):
  import siamese_jax.configs

  parser = sj_cli.make_parser("p", "d", siamese_jax.configs.MNIST)
  args = ["--optimizer", "adam", "--rmsprop-eps", "1e-6", "--rmsprop-decay", "0.8"]
  with pytest.raises(SystemExit):
    sj_cli.config_from_args(parser, parser.parse_args(args))
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "--rmsprop-decay does not apply" in err and "--rmsprop-eps does not apply" in err
  assert err.endswith("Leave them out.")
  # AdamW's decay is Adam's: with RMSProp it would do nothing.
  with pytest.raises(SystemExit):
    sj_cli.config_from_args(parser, parser.parse_args(["--weight-decay", "1e-4"]))
  assert "--weight-decay does not apply" in capsys.readouterr().err


class FakeTty:
  def __init__(self):
    self.text = ""

  def isatty(self):
    return True

  def write(self, s):
    self.text += s

  def flush(self):
    pass


@pytest.mark.slow
def test_progress_bar_shows_how_far_the_epoch_got(tmp_path, small_mnist, monkeypatch):
  tty = FakeTty()
  monkeypatch.setattr(sys, "stderr", tty)
  train_and_evaluate(Config(epochs=1, batch_size=16), tmp_path / "w", small_mnist, chunk_steps=10)
  steps = 10 * 59 * 2 // 16  # 73 steps: chunks of 10 and 11
  assert "epoch 1/1 [" in tty.text and f"/{steps} steps" in tty.text
  assert f"{steps}/{steps} steps" in tty.text
  assert tty.text.count("\r") >= 7  # redrawn in place, chunk by chunk


@pytest.mark.slow
def test_no_progress_bar_off_a_terminal(tmp_path, small_mnist, capsys):
  train_and_evaluate(Config(epochs=1, batch_size=16), tmp_path / "w", small_mnist)
  assert "steps" not in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_events_through_the_same_writer(tmp_path, small_mnist):
  train_and_evaluate(Config(epochs=2, batch_size=16), tmp_path / "w", small_mnist, tensorboard=True)
  files = os.listdir(tmp_path / "w/tensorboard")
  assert len(files) == 1 and files[0].startswith("events.out.tfevents")
  raw = open(tmp_path / "w/tensorboard" / files[0], "rb").read()
  for tag in (b"train_loss", b"val_accuracy", b"epoch_seconds"):
    assert tag in raw
  assert "tensorflow" not in sys.modules
