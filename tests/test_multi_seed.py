"""--seeds and --sweep: several models in one program, each equal to its plain run."""

import json
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from siamese_jax import (
  Config,
  ConfigError,
  WorkdirError,
  load_trained,
  retrieval_metrics,
  train_and_evaluate,
)
from siamese_jax.rundir.results import summarize
from siamese_jax.training.placement import model_mesh

from conftest import (
  TIMING,
  results,
  run_module,
  same_files,
  start_module,
  synthetic_mnist,
  write_mnist_dir,
)

CONFIG = Config(epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
  data = synthetic_mnist()
  root = tmp_path_factory.mktemp("seeds")
  summary = train_and_evaluate(CONFIG, root / "multi", data, seeds=[0, 3], plots=False)
  return data, root, summary


@pytest.mark.slow
def test_each_seed_equals_its_single_seed_run_bitwise(two_seeds):
  data, root, _ = two_seeds
  for seed in (0, 3):
    single = root / f"single{seed}"
    train_and_evaluate(Config(epochs=2, batch_size=32, seed=seed), single, data, plots=False)
    same_files(single, root / "multi" / f"seed_{seed}")


def test_summary_holds_mean_std_min_max_over_seeds(two_seeds, capsys):
  _, root, summary = two_seeds
  saved = json.loads((root / "multi/summary.json").read_text())
  assert saved["seeds"] == [0, 3] and saved["num_seeds"] == 2
  accs = [results(root / f"multi/seed_{s}/results.json")["test_accuracy"] for s in (0, 3)]
  t = saved["results"]["test_accuracy"]
  assert t["mean"] == pytest.approx(sum(accs) / 2)
  assert t["min"] == min(accs) and t["max"] == max(accs)
  assert t["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
  assert "seed" in saved["results"] and "threshold" in saved["results"]
  assert summarize([{"a": 1.0, "s": "x"}])["results"] == {
    "a": {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}
  }


def test_the_seeds_folder_is_one_model_whose_squared_distances_average_its_members(two_seeds):
  data, root, summary = two_seeds
  ensemble = load_trained(root / "multi")
  members = [load_trained(root / f"multi/seed_{s}") for s in (0, 3)]
  assert ensemble.members == 2 and [m.members for m in members] == [1, 1]
  x1, x2 = data.test_images[:50], data.test_images[50:100]
  d, (d0, d3) = ensemble.distance(x1, x2), [m.distance(x1, x2) for m in members]
  np.testing.assert_allclose(d**2, (d0**2 + d3**2) / 2, rtol=1e-5, atol=1e-6)
  assert ensemble.embed(x1).shape == (50, 256)
  # The run scored this same model: its summary's ensemble figures are load_trained's.
  scored = summary["ensemble"]
  assert scored["members"] == 2 and ensemble.threshold == scored["threshold"]
  assert (
    json.loads((root / "multi/summary.json").read_text())["ensemble"]["threshold"]
    == (scored["threshold"])
  )
  r = retrieval_metrics(ensemble.embed(data.test_images), data.test_labels)
  assert r["precision_at_1"] == scored["test_precision_at_1"]
  assert r["map_at_r"] == pytest.approx(scored["test_map_at_r"], abs=1e-7)
  # Its own figures, not the members' mean (a continuous one: the synthetic
  # digits can make every retrieval figure 1.0 for members and ensemble alike).
  assert scored["threshold"] != pytest.approx(summary["results"]["threshold"]["mean"])


def test_members_that_differ_in_more_than_the_seed_are_not_one_model(two_seeds, tmp_path):
  _, root, _ = two_seeds
  shutil.copytree(root / "multi", tmp_path / "m")
  config = tmp_path / "m/seed_3/config.json"
  config.write_text(config.read_text().replace('"margin": 1.0', '"margin": 2.0'))
  with pytest.raises(WorkdirError, match="seed_3's config differs from seed_0's"):
    load_trained(tmp_path / "m")


def test_a_damaged_summary_is_named(tmp_path):
  (tmp_path / "summary.json").write_text('{"seeds": [0')
  with pytest.raises(WorkdirError, match="summary.json cannot be read.*--resume"):
    load_trained(tmp_path)


@pytest.mark.slow
def test_same_seeds_twice_same_files(two_seeds, tmp_path):
  data, root, _ = two_seeds
  train_and_evaluate(CONFIG, tmp_path / "again", data, seeds=[0, 3], plots=False)
  for seed in (0, 3):
    same_files(root / "multi" / f"seed_{seed}", tmp_path / "again" / f"seed_{seed}")
  a = json.loads((root / "multi/summary.json").read_text())["results"]
  b = json.loads((tmp_path / "again/summary.json").read_text())["results"]
  assert {k: v for k, v in a.items() if k not in TIMING} == {
    k: v for k, v in b.items() if k not in TIMING
  }


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [None, [1, 2]])
def test_training_longer_equals_a_longer_run(tmp_path, small_mnist, seeds):
  def train(config, workdir, **kw):
    if seeds is None:
      return train_and_evaluate(config, workdir, small_mnist, plots=False, **kw)
    return train_and_evaluate(config, workdir, small_mnist, seeds=seeds, plots=False, **kw)

  train(Config(epochs=3, batch_size=32), tmp_path / "three")
  train(Config(epochs=1, batch_size=32), tmp_path / "grown")
  train(Config(epochs=3, batch_size=32), tmp_path / "grown", resume=True)
  dirs = [""] if seeds is None else [f"seed_{s}" for s in seeds]
  for d in dirs:
    same_files(tmp_path / "three" / d, tmp_path / "grown" / d)
  with pytest.raises(WorkdirError, match="more epochs, never fewer"):
    train(Config(epochs=2, batch_size=32), tmp_path / "grown", resume=True)
  with pytest.raises(WorkdirError, match=r"differing fields: margin.*only --epochs may grow"):
    train(Config(epochs=4, batch_size=32, margin=2.0), tmp_path / "grown", resume=True)


@pytest.mark.slow
def test_fixed_pairs_with_a_holdout_do_not_stack_but_fresh_pairs_do(tmp_path, small_mnist):
  with pytest.raises(ConfigError, match="--pairs fresh"):
    train_and_evaluate(
      Config(epochs=1, batch_size=32, holdout=150), tmp_path / "a", small_mnist, seeds=[0, 1]
    )
  config = Config(epochs=1, batch_size=32, holdout=150, pairs="fresh")
  train_and_evaluate(config, tmp_path / "b", small_mnist, seeds=[0, 1], plots=False)
  train_and_evaluate(
    Config(**{**config.to_dict(), "seed": 1}), tmp_path / "c", small_mnist, plots=False
  )
  same_files(tmp_path / "c", tmp_path / "b/seed_1")


def test_model_mesh_uses_the_largest_dividing_device_count():
  import jax

  dev = jax.devices()[:1] * 4  # the rule only; any list of devices
  assert [model_mesh(k, dev).devices.size for k in (1, 2, 3, 4, 6, 7)] == [1, 2, 3, 4, 3, 1]


@pytest.mark.slow
def test_seeds_spread_over_two_forced_host_devices(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "data", small_mnist)
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  args = ["--data-dir", d, "--epochs", "2", "--batch-size", "32", "--no-progress"]
  # (How many devices K models use is test_model_mesh_uses_the_largest_dividing_device_count.)
  r = run_module(
    "experiments.mnist_siamese", *args, "--seeds", "0,1", "--workdir", str(tmp_path / "0,1"),
    env=env,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert "in one program on 2 device(s)" in r.stdout
  # On two devices each seed still equals its single-seed run on one device,
  # bit for bit (run as a program too: programs set an XLA flag, xla_flags.py).
  r = run_module(
    "experiments.mnist_siamese", *args, "--seed", "1", "--workdir", str(tmp_path / "one")
  )
  assert r.returncode == 0, r.stderr
  same_files(tmp_path / "one", tmp_path / "0,1/seed_1")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_files(tmp_path):
  d = write_mnist_dir(tmp_path / "data", synthetic_mnist(n_train=6000, n_test=300))
  args = ["--data-dir", d, "--epochs", "3", "--batch-size", "16", "--chunk-steps", "20"]
  args += ["--seeds", "0,1", "--no-progress"]
  r = run_module("experiments.mnist_siamese", *args, "--workdir", str(tmp_path / "ref"))
  assert r.returncode == 0, r.stderr
  workdir = tmp_path / "run"
  p = start_module("experiments.mnist_siamese", *args, "--workdir", str(workdir))
  t = time.time()
  while not (workdir / "checkpoint.msgpack").exists():
    assert p.poll() is None, p.communicate()
    assert time.time() - t < 120
    time.sleep(0.01)
  time.sleep(0.2)  # into epoch 2
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert not (workdir / "summary.json").exists(), "killed too late"
  r = run_module("experiments.mnist_siamese", *args, "--workdir", str(workdir), "--resume")
  assert r.returncode == 0, r.stderr
  assert "Resuming" in r.stdout
  for s in (0, 1):
    same_files(tmp_path / "ref" / f"seed_{s}", workdir / f"seed_{s}")
  assert "over 2 seeds" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
  "field, values, extra",
  [
    ("margin", (0.5, 2.0), {}),
    ("learning_rate", (3e-4, 3e-3), {}),
    # The schedule's factor sits before the rate, a leaf here (make_optimizer).
    ("learning_rate", (3e-4, 3e-3), dict(lr_schedule="cosine")),
    # The moving average is the optimizer's last link: stacked and swept with it.
    ("margin", (0.5, 2.0), dict(ema_decay=0.9)),
  ],
  ids=["margin", "learning_rate", "learning_rate-cosine", "margin-ema"],
)
def test_a_sweep_equals_single_runs_of_each_value(tmp_path, small_mnist, field, values, extra):
  config = Config(epochs=1, batch_size=32, **extra)
  summary = train_and_evaluate(
    config, tmp_path / "sweep", small_mnist, seeds=[0, 1], sweep=(field, values), plots=False
  )
  assert summary["sweep"] == {"field": field, "values": list(values)}
  assert set(summary["by_value"]) == {f"{v:g}" for v in values}
  with pytest.raises(WorkdirError, match=f"holds a sweep of {field}"):
    load_trained(tmp_path / "sweep")
  for v in values:
    group = summary["by_value"][f"{v:g}"]
    assert group["num_seeds"] == 2
    single = tmp_path / f"single{v}"
    train_and_evaluate(
      Config(epochs=1, batch_size=32, seed=1, **extra, **{field: v}),
      single,
      small_mnist,
      plots=False,
    )
    same_files(single, tmp_path / "sweep" / f"{field}_{v:g}" / "seed_1")


@pytest.mark.slow
def test_one_compilation_serves_every_swept_value(tmp_path, small_mnist, monkeypatch):
  from siamese_jax.training import placement

  compiles = []
  real = placement.train_chunk_stacked

  def counting(*args, **kwargs):
    count = []

    def listen(event, duration, **kw):
      if event == "/jax/core/compile/backend_compile_duration":
        count.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
      out = jax.block_until_ready(real(*args, **kwargs))
    finally:
      jax.monitoring.unregister_event_duration_listener(listen)
    compiles.append(len(count))
    return out

  monkeypatch.setattr(placement, "train_chunk_stacked", counting)
  # 6 models with 3 margins, 2 epochs of one chunk each: at most the first
  # call compiles (none if an earlier test compiled these shapes).
  train_and_evaluate(
    Config(epochs=2, batch_size=32, seed=7), tmp_path / "a", small_mnist, seeds=[0, 1],
    sweep=("margin", (0.5, 1.0, 2.0)), plots=False,
  )  # fmt: skip
  assert len(compiles) == 2 and compiles[0] <= 1 and compiles[1] == 0, compiles


@pytest.mark.slow
def test_sweep_flags(tmp_path, small_mnist):
  d = write_mnist_dir(tmp_path / "data", small_mnist)
  args = ["--data-dir", d, "--epochs", "1", "--batch-size", "32", "--no-progress"]
  r = run_module(
    "experiments.mnist_siamese", *args, "--sweep", "dropout=0,0.1", "--workdir", str(tmp_path / "x")
  )
  assert r.returncode == 2 and "only learning_rate and margin can be swept" in r.stderr
  r = run_module(
    "experiments.mnist_siamese", *args, "--sweep", "margin=-1,1", "--workdir", str(tmp_path / "x")
  )
  assert r.returncode == 2 and "margin" in r.stderr and "Traceback" not in r.stderr
  r = run_module(
    "experiments.mnist_siamese", *args, "--seeds", "0,1", "--sweep", "margin=0.5,1",
    "--workdir", str(tmp_path / "ok"),
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert "2 seeds x 2 values of margin in one program" in r.stdout
  assert "margin 0.5: test accuracy" in r.stdout and "over 2 seeds" in r.stdout
  assert (tmp_path / "ok/margin_1/seed_1/results.json").exists()


@pytest.mark.slow
def test_epoch_seconds_count_training_and_validation_alike(tmp_path, small_mnist, monkeypatch):
  import time

  from siamese_jax.training import placement

  for cls in (placement.DataParallel, placement.Stacked):
    real = cls.validate

    def slow(self, state, real=real):
      time.sleep(0.5)  # a validation that takes time must show in epoch_seconds
      return real(self, state)

    monkeypatch.setattr(cls, "validate", slow)
  config = Config(epochs=1, batch_size=32)
  train_and_evaluate(config, tmp_path / "one", small_mnist, plots=False)
  train_and_evaluate(config, tmp_path / "two", small_mnist, seeds=[0, 1], plots=False)
  for path in ("one", "two/seed_0", "two/seed_1"):
    line = json.loads((tmp_path / path / "metrics.jsonl").read_text())
    assert line["epoch_seconds"] >= 0.5, path


@pytest.mark.slow
def test_resuming_seeds_in_another_order_names_the_order_and_destroys_nothing(
  tmp_path, small_mnist
):
  train_and_evaluate(CONFIG, tmp_path / "w", small_mnist, seeds=[0, 1], plots=False)
  before = sorted(p.name for p in (tmp_path / "w").iterdir())
  with pytest.raises(WorkdirError, match=r"same seeds in another order\. Resume with --seeds 0,1"):
    train_and_evaluate(CONFIG, tmp_path / "w", small_mnist, seeds=[1, 0], resume=True)
  assert sorted(p.name for p in (tmp_path / "w").iterdir()) == before
