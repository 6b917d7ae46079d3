"""The benchmark's figures are computed and reported (tiny data, no timing asserted)."""

import json

import pytest

from benchmarks.speed import (
  flop_counts,
  format_report,
  machine_peak_gflops,
  run_benchmark,
)
from siamese_jax import Config, ConfigError

from conftest import run_module, synthetic_mnist, write_mnist_dir


def test_flop_count_by_hand_follows_the_config():
  # The default: forward 2 x 133,120 an image; a pair is 2 images x 2 (forward
  # and weight grads) x 266,240, plus input grads of layers 2 and 3: 2 x 2 x 2 x 16,384.
  assert flop_counts(Config()) == (266_240, 532_480 + 532_480 + 131_072)
  # 784-64-32: 50,176 + 2,048 multiply-adds; input grads of layer 2 only.
  assert flop_counts(Config(hidden_sizes=(64, 32))) == (104_448, 4 * 104_448 + 4 * 2_048)
  with pytest.raises(ConfigError, match="--encoder cnn"):
    flop_counts(Config(encoder="cnn"))


def test_machine_peak_is_counted_from_cpuinfo():
  m = machine_peak_gflops()
  assert m["cores"] >= 1 and m["fp32_flop_per_cycle_per_core"] in (16, 32, 64)
  if m["mhz"]:
    assert m["peak_gflops"] == pytest.approx(
      m["cores"] * m["mhz"] * 1e-3 * m["fp32_flop_per_cycle_per_core"]
    )


@pytest.mark.slow
def test_run_benchmark_reports_every_figure():
  r = run_benchmark(
    synthetic_mnist(), Config(batch_size=32), epochs=2, loop_epochs=1, log=lambda s: None
  )
  for k in (
    "compile_seconds",
    "train_seconds_per_epoch",
    "eval_seconds_per_epoch",
    "loop_train_seconds_per_epoch",
    "train_pairs_per_second",
    "train_gflops_achieved",
    "matmul_ceiling_gflops",
  ):
    assert r[k] > 0, k
  assert r["compiles"] >= 1
  # The work is the timed config's, from sources the report does not compute:
  # the pairs the data makes (10 digits x 59 x 2, in whole batches of 32), the
  # FLOPs counted by hand for this config (above), and XLA's own count of
  # the compiled step, which must agree with the hand count.
  pairs = r["train_pairs_per_second"] * r["train_seconds_per_epoch"]
  assert pairs == pytest.approx((1180 // 32) * 32)
  assert r["flop_per_train_pair"] == flop_counts(Config(batch_size=32))[1]
  assert 0.8 < r["xla_flop_per_train_pair"] / r["flop_per_train_pair"] < 1.25
  text = format_report(r)
  assert f"{r['train_seconds_per_epoch']:.3f} s/epoch" in text  # the figures measured, printed
  assert f"{r['train_gflops_achieved']:.0f} GFLOP/s training" in text
  json.dumps(r)  # --json writes exactly this


@pytest.mark.slow
def test_benchmark_cli_writes_json(tmp_path):
  data_dir = write_mnist_dir(tmp_path / "data", synthetic_mnist())
  out = tmp_path / "bench.json"
  args = ["--data-dir", data_dir, "--epochs", "2", "--loop-epochs", "1", "--json", str(out)]
  r = run_module("experiments.benchmark", *args, "--breakdown")
  assert r.returncode == 0, r.stderr
  report = json.loads(out.read_text())
  assert report["full_run"]["peak_rss_mib"] > 0
  assert "full default run" in r.stdout
  assert len(report["breakdown"]) == 7 and "the step built up from its matmuls" in r.stdout
