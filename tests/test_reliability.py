"""Checkpoints and resume, Ctrl-C, workdir collisions, bad input, non-finite loss."""

import dataclasses
import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from siamese_jax import (
  Config,
  NonFiniteLossError,
  WorkdirError,
  checkpoint,
  cli,
  create_train_state,
  load_trained,
  train_and_evaluate,
)
from siamese_jax.sampling.splits import check_data
from siamese_jax.training import loop as run_lib

from conftest import (
  assert_same_run,
  jsonl,
  start_module,
  synthetic_mnist,
  wait_for,
  write_idx,
  write_mnist_dir,
)


def start(*args):
  return start_module("experiments.mnist_siamese", "--no-progress", *args)


def run_cli(*args, timeout=300):
  p = start(*args)
  out, err = p.communicate(timeout=timeout)
  return p.returncode, out, err


@pytest.fixture(scope="module")
def big_data_dir(tmp_path_factory):
  # Enough pairs that an epoch lasts long enough to be interrupted inside.
  return write_mnist_dir(tmp_path_factory.mktemp("data"), synthetic_mnist(n_train=6000, n_test=300))


@pytest.fixture(scope="module")
def reference_run(big_data_dir, tmp_path_factory):
  """An uninterrupted run to compare the interrupted ones with."""
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  rc, _, err = run_cli(*ARGS(big_data_dir), "--workdir", workdir)
  assert rc == 0, err
  return workdir


def ARGS(data_dir):
  return ["--data-dir", data_dir, "--epochs", "3", "--batch-size", "16", "--chunk-steps", "20"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(big_data_dir, reference_run, tmp_path):
  workdir = str(tmp_path / "run")
  p = start(*ARGS(big_data_dir), "--workdir", workdir)
  wait_for(os.path.join(workdir, "checkpoint.msgpack"), p)  # epoch 1 finished
  time.sleep(0.15)  # into epoch 2
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert not os.path.exists(os.path.join(workdir, "results.json")), "killed too late"
  rc, out, err = run_cli(*ARGS(big_data_dir), "--workdir", workdir, "--resume")
  assert rc == 0, err
  assert "Resuming" in out
  assert_same_run(reference_run, workdir)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_says_how_to_resume(big_data_dir, reference_run, tmp_path):
  workdir = str(tmp_path / "run")
  p = start(*ARGS(big_data_dir), "--workdir", workdir)
  wait_for(os.path.join(workdir, "metrics.jsonl"), p)
  time.sleep(0.1)
  p.send_signal(signal.SIGINT)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 130, err
  assert "Traceback" not in err
  assert "checkpoint saved" in err and "--resume" in err and workdir in err
  command = err.split("To resume: ")[1].strip()
  assert command.startswith("python -m experiments.mnist_siamese") and command.endswith("--resume")
  rc, _, err = run_cli(*ARGS(big_data_dir), "--workdir", workdir, "--resume")
  assert rc == 0, err
  assert_same_run(reference_run, workdir)


@pytest.mark.slow
@pytest.mark.parametrize(
  "config",
  [
    Config(epochs=2, batch_size=16),
    # The schedule's count is optimizer state: it checkpoints and resumes with it.
    Config(
      epochs=2,
      batch_size=16,
      optimizer="adam",
      lr_schedule="cosine",
      warmup_epochs=1,
      weight_decay=1e-4,
    ),  # fmt: skip
  ],
  ids=["default", "adamw-warmup-cosine"],
)
def test_resume_from_a_mid_epoch_checkpoint_in_process(tmp_path, small_mnist, monkeypatch, config):
  """Stop after a chunk (as Ctrl-C does), resume, and match an uninterrupted run."""
  train_and_evaluate(config, tmp_path / "ref", small_mnist, chunk_steps=8)

  class StopNow:
    def __init__(self):
      self.set = False
      self.signum = None  # as after Ctrl-C: the message says so
      self.calls = 0

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      pass

  flag = StopNow()
  real_epoch = run_lib.train_epoch

  def epoch_then_flag(*args, **kwargs):
    flag.calls += 1
    if flag.calls == 2:  # Ctrl-C during the second epoch.
      flag.set = True
    return real_epoch(*args, **kwargs)

  monkeypatch.setattr(run_lib, "_StopFlag", lambda: flag)
  monkeypatch.setattr(run_lib, "train_epoch", epoch_then_flag)
  with pytest.raises(run_lib.RunInterrupted, match="checkpoint saved"):
    train_and_evaluate(config, tmp_path / "run", small_mnist, chunk_steps=8)
  monkeypatch.undo()
  assert len(jsonl(tmp_path / "run/metrics.jsonl")) == 1
  train_and_evaluate(config, tmp_path / "run", small_mnist, chunk_steps=5, resume=True)
  assert_same_run(str(tmp_path / "ref"), str(tmp_path / "run"))


@pytest.mark.slow
def test_a_scheduled_run_cannot_grow_its_epochs(tmp_path, small_mnist):
  config = Config(epochs=2, batch_size=64, lr_schedule="cosine")
  train_and_evaluate(config, tmp_path / "w", small_mnist)
  before = (tmp_path / "w/metrics.jsonl").read_text()
  with pytest.raises(WorkdirError, match="--lr-schedule cosine was planned over its 2 epochs"):
    train_and_evaluate(
      dataclasses.replace(config, epochs=3), tmp_path / "w", small_mnist, resume=True
    )
  assert (tmp_path / "w/metrics.jsonl").read_text() == before
  # The schedule's count is optimizer state, which load_trained restores past.
  assert load_trained(str(tmp_path / "w")).embed(small_mnist.test_images[:2]).shape == (2, 128)


@pytest.mark.slow
def test_workdir_with_another_config_is_refused(tmp_path, small_mnist):
  train_and_evaluate(Config(epochs=1, batch_size=32), tmp_path / "w", small_mnist)
  before = (tmp_path / "w/metrics.jsonl").read_text()
  with pytest.raises(WorkdirError, match=r"another config \(differs in margin\).*--overwrite"):
    train_and_evaluate(Config(epochs=1, batch_size=32, margin=2.0), tmp_path / "w", small_mnist)
  with pytest.raises(WorkdirError, match=r"already holds a run.*--resume"):
    train_and_evaluate(Config(epochs=1, batch_size=32), tmp_path / "w", small_mnist)
  assert (tmp_path / "w/metrics.jsonl").read_text() == before
  train_and_evaluate(
    Config(epochs=1, batch_size=32, margin=2.0), tmp_path / "w", small_mnist, overwrite=True
  )
  assert json.loads((tmp_path / "w/config.json").read_text())["margin"] == 2.0


@pytest.mark.slow
def test_resume_with_another_config_lists_the_fields(tmp_path, small_mnist):
  train_and_evaluate(Config(epochs=1, batch_size=32), tmp_path / "w", small_mnist)
  changed = Config(epochs=1, batch_size=16, dropout=0.2)
  with pytest.raises(
    WorkdirError, match=r"batch_size \(run: 32, now: 16\), dropout \(run: 0.1, now: 0.2\)"
  ):
    train_and_evaluate(changed, tmp_path / "w", small_mnist, resume=True)


@pytest.mark.slow
def test_resume_of_nothing_starts_the_run(tmp_path, small_mnist):
  # One `--resume` command serves a SLURM job's first start and every requeue.
  config = Config(epochs=1, batch_size=32)
  train_and_evaluate(config, tmp_path / "plain", small_mnist, plots=False)
  (tmp_path / "empty").mkdir()
  for name in ("new", "empty"):
    train_and_evaluate(config, tmp_path / name, small_mnist, resume=True, plots=False)
    assert_same_run(tmp_path / name, tmp_path / "plain")


@pytest.mark.slow
def test_resume_trusts_the_checkpoint_not_a_hand_edited_or_deleted_config(tmp_path, small_mnist):
  w = tmp_path / "w"
  train_and_evaluate(Config(epochs=1, batch_size=32), w, small_mnist, plots=False)
  edited = json.loads((w / "config.json").read_text())
  (w / "config.json").write_text(json.dumps({**edited, "margin": 2.0}))
  # Epoch 1 trained at margin 1: the checkpoint says so, whatever config.json says.
  with pytest.raises(WorkdirError, match=r"margin \(run: 1.0, now: 2.0\)"):
    train_and_evaluate(Config(epochs=2, batch_size=32, margin=2.0), w, small_mnist, resume=True)
  train_and_evaluate(Config(epochs=2, batch_size=32), w, small_mnist, resume=True, plots=False)
  assert json.loads((w / "config.json").read_text())["margin"] == 1.0  # written again, true
  (w / "config.json").unlink()  # deleted: the checkpoint still holds the config
  train_and_evaluate(Config(epochs=3, batch_size=32), w, small_mnist, resume=True, plots=False)
  assert json.loads((w / "config.json").read_text())["epochs"] == 3
  assert [line["epoch"] for line in jsonl(w / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.slow
def test_a_line_past_the_checkpoint_cut_short_by_a_kill_is_written_again(tmp_path, small_mnist):
  config = Config(epochs=2, batch_size=32)
  train_and_evaluate(config, tmp_path / "ref", small_mnist)
  train_and_evaluate(Config(epochs=1, batch_size=32), tmp_path / "w", small_mnist)
  # Make it look like a 2-epoch run killed while writing epoch 2's line.
  (tmp_path / "w/config.json").write_text(json.dumps(config.to_dict()))
  with open(tmp_path / "w/metrics.jsonl", "a") as f:
    f.write('{"epoch": 2, "train_lo')
  target = create_train_state(jax.random.key(0), config)
  ckpt = checkpoint.load(str(tmp_path / "w"), target)
  checkpoint.save(str(tmp_path / "w"), ckpt, config)
  train_and_evaluate(config, tmp_path / "w", small_mnist, resume=True)
  assert jsonl(tmp_path / "w/metrics.jsonl") == jsonl(tmp_path / "ref/metrics.jsonl")


@pytest.mark.slow
def test_non_finite_loss_stops_in_the_epoch_and_keeps_the_last_good_checkpoint(
  tmp_path, small_mnist, monkeypatch
):
  config = Config(epochs=3, batch_size=16)
  real_epoch = run_lib.train_epoch
  calls = []

  def poison_second_epoch(state, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # As if the update blew up: NaN parameters.
      state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
    return real_epoch(state, *args, **kwargs)

  monkeypatch.setattr(run_lib, "train_epoch", poison_second_epoch)
  steps = check_data(config, small_mnist).steps
  with pytest.raises(NonFiniteLossError) as e:
    train_and_evaluate(config, tmp_path / "w", small_mnist, chunk_steps=4)
  assert f"non-finite at step {steps + 1} (epoch 2)" in str(e.value)
  assert "last good checkpoint (after epoch 1)" in str(e.value)
  ckpt = checkpoint.load(str(tmp_path / "w"), create_train_state(jax.random.key(0), config))
  assert ckpt.epoch == 1 and ckpt.step_in_epoch == 0
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(ckpt.state.params))
  assert len(jsonl(tmp_path / "w/metrics.jsonl")) == 1
  assert not (tmp_path / "w/results.json").exists()


@pytest.mark.slow
def test_huge_learning_rate_exits_1_with_the_step(tmp_path, small_mnist_dir):
  rc, _, err = run_cli(
    "--data-dir",
    small_mnist_dir,
    "--workdir",
    str(tmp_path / "w"),
    "--learning-rate",
    "1e30",
    "--batch-size",
    "16",
  )
  assert rc == 1, err
  assert "non-finite at step" in err and "--learning-rate" in err and "Traceback" not in err


# Bad input through the CLI: exit code, message, and nothing left behind.


def corrupt(data_dir, name, how):
  path = os.path.join(data_dir, name)
  raw = open(path, "rb").read()
  if how == "truncate":
    open(path, "wb").write(raw[: len(raw) // 2])
  elif how == "garble":
    open(path, "wb").write(raw[:10] + bytes(b ^ 0x5A for b in raw[10:]))
  elif how == "delete":
    os.unlink(path)


@pytest.mark.slow
@pytest.mark.parametrize(
  "mutate, message",
  [
    (
      lambda d, m: corrupt(d, "train-images-idx3-ubyte.gz", "truncate"),
      "train-images-idx3-ubyte.gz: corrupt or truncated gzip",
    ),
    (lambda d, m: corrupt(d, "t10k-labels-idx1-ubyte.gz", "garble"), "t10k-labels-idx1-ubyte.gz"),
    (
      lambda d, m: corrupt(d, "t10k-images-idx3-ubyte.gz", "delete"),
      "lacks t10k-images-idx3-ubyte[.gz]",
    ),
    (
      lambda d, m: write_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), m.train_labels[:10]),
      "600 images but",
    ),
    (
      lambda d, m: write_idx(
        os.path.join(d, "train-labels-idx1-ubyte.gz"),
        np.where(np.arange(600) == 7, 50, m.train_labels),
      ),
      "train-labels-idx1-ubyte.gz: class(es) [50] have a single training image",
    ),
    (
      lambda d, m: open(os.path.join(d, "t10k-images-idx3-ubyte.gz"), "wb").write(
        b"\x00\x00\x0c\x03" + b"\x00" * 12
      ),
      "bad IDX magic number",
    ),
  ],
)
def test_bad_data_exits_1_names_the_file_and_leaves_nothing(tmp_path, small_mnist, mutate, message):
  data_dir = write_mnist_dir(tmp_path / "data", small_mnist)
  mutate(data_dir, small_mnist)
  rc, _, err = run_cli("--data-dir", data_dir, "--workdir", str(tmp_path / "w"))
  assert rc == 1, err
  assert message in err and "Traceback" not in err
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_batch_larger_than_data_is_a_usage_error(tmp_path, small_mnist_dir):
  rc, _, err = run_cli(
    "--data-dir", small_mnist_dir, "--workdir", str(tmp_path / "w"), "--batch-size", "100000"
  )
  assert rc == 2, err
  assert "batch_size=100000 is larger than the" in err and "Traceback" not in err
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_unwritable_workdir_exits_1(tmp_path, small_mnist_dir):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  rc, _, err = run_cli("--data-dir", small_mnist_dir, "--workdir", str(blocker / "run"))
  assert rc == 1, err
  assert "lies under the file" in err and "--workdir" in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_and_overwrite_together_is_a_usage_error(tmp_path, small_mnist_dir):
  rc, _, err = run_cli(
    "--data-dir", small_mnist_dir, "--workdir", str(tmp_path / "w"), "--resume", "--overwrite"
  )
  assert rc == 2 and "contradict" in err


def test_a_workdir_in_use_is_refused_naming_the_holder(tmp_path):
  from siamese_jax.rundir.workdir import locked

  with locked(str(tmp_path / "w")):
    with pytest.raises(WorkdirError, match=rf"in use: process {os.getpid()} is running in it"):
      with locked(str(tmp_path / "w")):
        pass
  with locked(str(tmp_path / "w")):  # released at the end of the block
    pass
  # A refused run that created nothing else leaves no workdir behind.
  with pytest.raises(RuntimeError):
    with locked(str(tmp_path / "new")):
      raise RuntimeError
  assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_two_concurrent_resumes_one_is_refused_and_each_epoch_is_logged_once(
  tmp_path, small_mnist_dir
):
  args = ["--data-dir", small_mnist_dir, "--batch-size", "32", "--no-progress"]
  workdir = tmp_path / "w"
  data = synthetic_mnist()  # small_mnist_dir's data: a 1-epoch run to resume
  train_and_evaluate(Config(epochs=1, batch_size=32), workdir, data, plots=False)
  more = [*args, "--epochs", "3", "--workdir", str(workdir)]
  first = start_module("experiments.mnist_siamese", *more, "--resume")
  t = time.time()
  # Once the first holds the lock, freeze it there: the second meets it for sure.
  while (workdir / ".lock").read_text().strip() != str(first.pid):
    assert first.poll() is None, first.communicate()
    assert time.time() - t < 120
    time.sleep(0.01)
  first.send_signal(signal.SIGSTOP)
  try:
    rc, _, err = run_cli(*more, "--resume")
    assert rc == 1, err
    assert f"{str(workdir)!r} is in use: process {first.pid}" in err and "Traceback" not in err
  finally:
    first.send_signal(signal.SIGCONT)
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err
  assert [line["epoch"] for line in jsonl(workdir / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_final_evaluation_gives_the_resume_command(
  tmp_path, small_mnist, monkeypatch, signum
):
  real = run_lib.final_evaluation

  def stopped(*args, **kwargs):
    os.kill(os.getpid(), signum)  # Ctrl-C (SIGINT) or the scheduler's SIGTERM
    time.sleep(5)
    return real(*args, **kwargs)

  config = Config(epochs=1, batch_size=32)
  monkeypatch.setattr(run_lib, "final_evaluation", stopped)
  # As a background job of a script starts (SIGINT ignored): training stops
  # for the signal anyway, and so must the evaluation.
  inherited = signal.signal(signum, signal.SIG_IGN)
  try:
    with pytest.raises(run_lib.RunInterrupted, match="during the final evaluation.*--resume") as e:
      train_and_evaluate(config, tmp_path / "w", small_mnist, plots=False)
    assert signal.getsignal(signum) == signal.SIG_IGN  # the run's handler is gone again
  finally:
    signal.signal(signum, inherited)
  assert e.value.exit_code == 128 + signum
  assert not (tmp_path / "w" / "results.json").exists()
  monkeypatch.setattr(run_lib, "final_evaluation", real)
  train_and_evaluate(config, tmp_path / "w", small_mnist, resume=True, plots=False)
  train_and_evaluate(config, tmp_path / "plain", small_mnist, plots=False)
  assert_same_run(tmp_path / "w", tmp_path / "plain")


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
