"""One whole run: `train_and_evaluate(config, workdir, data)`.

What a run leaves in its workdir:

* `config.json`, written before training starts;
* `metrics.jsonl`, one JSON object per finished epoch;
* `checkpoint.msgpack`, replaced atomically after every epoch (and when the
  run is interrupted with Ctrl-C), so `resume=True` continues it bit for bit;
* `results.json`, written last: train and test pair accuracy and timings.

Keys: one root key from `config.seed`, split once into named keys (init,
pairs, data, dropout). Epoch e shuffles with `fold_in(data_key, e)`; dropout
uses `fold_in(dropout_key, step)` inside the step. Nothing random depends on
wall-clock, chunking, or whether the run was resumed.
"""

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import jax
import numpy as np

from siamese_jax import checkpoint, evaluation, parallel
from siamese_jax import plots as plot_lib
from siamese_jax.config import Config
from siamese_jax.errors import (
  ConfigError,
  DataError,
  NonFiniteLossError,
  SiameseJaxError,
  WorkdirError,
)
from siamese_jax.files import atomic_write_bytes, atomic_write_json
from siamese_jax.metric_writers import ConsoleWriter, JsonlWriter, MultiWriter, TensorBoardWriter
from siamese_jax.mnist import MnistData
from siamese_jax.pairs import class_index, count_pairs, make_pairs, sample_pairs
from siamese_jax.progress import ProgressBar
from siamese_jax.train import (
  create_train_state,
  epoch_batches,
  evaluate,
  to_host_scalars,
  train_epoch,
)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
RESULTS_NAME = "results.json"
RUN_FILES = (CONFIG_NAME, METRICS_NAME, RESULTS_NAME, checkpoint.CHECKPOINT_NAME, "distances.png")


class RunInterrupted(SiameseJaxError):
  """The run was stopped by Ctrl-C after saving a checkpoint."""


@dataclasses.dataclass(frozen=True)
class RunKeys:
  init: jax.Array
  pairs: jax.Array
  data: jax.Array
  dropout: jax.Array


def run_keys(seed: int) -> RunKeys:
  """Splits the root key of `seed` once into the run's named keys."""
  return RunKeys(*jax.random.split(jax.random.key(seed), 4))


@dataclasses.dataclass(frozen=True)
class PairSet:
  """One split's images (host, uint8) and its fixed pairs."""

  images: np.ndarray  # uint8[N, 28, 28]
  labels: np.ndarray  # uint8[N]
  pairs: np.ndarray  # int32[P, 2] indices into `images`
  y: np.ndarray  # float32[P], 1.0 = same digit


@dataclasses.dataclass(frozen=True)
class PairSets:
  """The run's splits: train, test, and the optional held-out validation."""

  train: PairSet
  test: PairSet
  val: PairSet | None


def make_pair_sets(keys: RunKeys, data: MnistData, holdout: int = 0) -> PairSets:
  """The original's pairs of each split, after holding out validation images.

  With `holdout` > 0, that many training images (chosen by the pairs key)
  form the validation split; both parts keep the split's order, which the
  original's pairing (i-th with (i+1)-th image of a digit) depends on.

  Raises:
    ConfigError: if the holdout leaves a split without 2 images of a digit.
  """
  images, labels = data.train_images, data.train_labels
  val = None
  if holdout:
    n = len(labels)
    if holdout >= n:
      raise ConfigError(f"holdout={holdout} must be smaller than the {n} training images.")
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(keys.pairs, 2), n))
    val_idx, train_idx = np.sort(perm[:holdout]), np.sort(perm[holdout:])
    try:
      vp, vy = make_pairs(jax.random.fold_in(keys.pairs, 3), labels[val_idx])
    except DataError as e:
      raise ConfigError(f"holdout={holdout} is too small for validation pairs: {e}") from None
    val = PairSet(images[val_idx], labels[val_idx], vp, vy)
    images, labels = images[train_idx], labels[train_idx]
  try:
    tp, ty = make_pairs(jax.random.fold_in(keys.pairs, 0), labels)
  except DataError as e:
    if not holdout:
      raise
    raise ConfigError(f"holdout={holdout} leaves too few training images: {e}") from None
  ep, ey = make_pairs(jax.random.fold_in(keys.pairs, 1), data.test_labels)
  return PairSets(
    PairSet(images, labels, tp, ty), PairSet(data.test_images, data.test_labels, ep, ey), val
  )


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write-test")
    with open(probe, "w"):
      pass
    os.unlink(probe)
  except OSError as e:
    raise WorkdirError(
      f"Workdir {workdir!r} is not writable ({e.strerror}). Choose another "
      "--workdir, or fix its permissions."
    ) from None


def prepare_workdir(workdir: str, config: Config, *, resume: bool, overwrite: bool) -> None:
  """Creates the workdir, or checks that it may be reused, then writes config.json.

  Raises:
    WorkdirError: unwritable, holds another run (without overwrite), or the
      run to resume has a different config (the message lists the fields).
  """
  if resume and overwrite:
    raise ConfigError("--resume and --overwrite contradict each other; pass one of them.")
  config_path = os.path.join(workdir, CONFIG_NAME)
  has_run = any(os.path.exists(os.path.join(workdir, f)) for f in RUN_FILES)
  if resume:
    if not os.path.isfile(config_path):
      raise WorkdirError(
        f"Nothing to resume in {workdir!r}: it holds no {CONFIG_NAME}. Check "
        "--workdir, or drop --resume to start a new run."
      )
    old = _read_config(config_path)
    diff = config.diff(old)
    if diff:
      fields = ", ".join(f"{k} (run: {b!r}, now: {a!r})" for k, (a, b) in diff.items())
      raise WorkdirError(
        f"Cannot resume {workdir!r} with a different config; differing fields: "
        f"{fields}. Resume with the run's own flags, or start a new run in "
        "another --workdir."
      )
    _check_writable(workdir)
    return
  if has_run and not overwrite:
    what = "a run"
    if os.path.isfile(config_path):
      diff = config.diff(_read_config(config_path))
      if diff:
        what = f"a run with another config (differs in {', '.join(diff)})"
    raise WorkdirError(
      f"Workdir {workdir!r} already holds {what}. Pass --resume to continue it, "
      "--overwrite to replace it, or choose another --workdir."
    )
  _check_writable(workdir)
  if overwrite:
    for f in RUN_FILES:
      try:
        os.unlink(os.path.join(workdir, f))
      except FileNotFoundError:
        pass
  atomic_write_json(config_path, config.to_dict())


def _read_config(path: str) -> Config:
  try:
    with open(path) as f:
      return Config.from_dict(json.load(f))
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f"{path} is not a readable config ({e}). Pass --overwrite to replace "
      "the run, or choose another --workdir."
    ) from None


def _truncate_metrics(path: str, keep_epochs: int) -> None:
  """Keeps the metrics lines of epochs <= keep_epochs (the checkpoint's).

  Lines past the checkpoint were written before a kill and will be written
  again; a line cut short by the kill does not parse and is dropped too.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["epoch"] <= keep_epochs:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        continue
  atomic_write_bytes(path, "".join(kept).encode())


class _SigintFlag:
  """Turns the first Ctrl-C into a flag the loop checks between chunks."""

  def __init__(self):
    self.set = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.set:  # A second Ctrl-C: stop at once.
      raise KeyboardInterrupt
    self.set = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGINT, self._old)


def train_and_evaluate(
  config: Config,
  workdir: str,
  data: MnistData,
  *,
  resume: bool = False,
  overwrite: bool = False,
  chunk_steps: int = 200,
  progress: bool = True,
  tensorboard: bool = False,
  plots: bool = True,
  devices=None,
  stdout: TextIO | None = None,
  on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
  """Trains the Siamese MLP on MNIST pairs and evaluates it.

  Args:
    config: the run's hyperparameters.
    workdir: where config.json, metrics.jsonl, the checkpoint, results.json
      and the pictures go.
    data: MNIST (see `siamese_jax.mnist.load_mnist`).
    resume: continue the run in `workdir` from its checkpoint.
    overwrite: replace a run already in `workdir`.
    chunk_steps: about how many steps run per device dispatch; the progress
      bar moves once per chunk. Results do not depend on it.
    progress: draw a progress bar on stderr when it is a terminal.
    tensorboard: also write TensorBoard event files into the workdir.
    plots: write `distances.png` (needs matplotlib; skipped with a note if
      it is not installed).
    devices: the devices to train on, data-parallel (all if None).
    stdout: where the per-epoch lines go (sys.stdout if None).
    on_epoch: called with (epoch, metrics) after each epoch is logged.

  Returns:
    The contents of results.json.

  Raises:
    SiameseJaxError subclasses for expected failures: bad config, workdir
    problems, a non-finite loss, or an interruption (after checkpointing).
  """
  t_start = time.perf_counter()
  out = stdout or sys.stdout
  keys = run_keys(config.seed)
  sets = make_pair_sets(keys, data, config.holdout)
  # Pairs per epoch: the fixed pairs, or as many fresh ones as the original
  # makes of the whole training split (108,400 on MNIST, holdout or not).
  if config.pairs == "fresh":
    num_pairs = count_pairs(data.train_labels)
  else:
    num_pairs = len(sets.train.pairs)
  steps = num_pairs // config.batch_size
  if steps == 0:
    raise ConfigError(
      f"batch_size={config.batch_size} is larger than the {num_pairs} training pairs; "
      "use --batch-size of at most that."
    )
  mesh = parallel.data_mesh(devices)
  parallel.check_batch_size(config.batch_size, mesh)
  workdir = os.fspath(workdir)
  prepare_workdir(workdir, config, resume=resume, overwrite=overwrite)
  metrics_path = os.path.join(workdir, METRICS_NAME)

  # Everything lives on the devices, replicated; only batches are split.
  rep = parallel.replicated(mesh)

  def put(split: PairSet | None):
    if split is None:
      return None
    return parallel.put_replicated((split.images, split.pairs, split.y), mesh)

  train, test, val = put(sets.train), put(sets.test), put(sets.val)
  monitor = val if val is not None else test  # per-epoch validation
  make_batches = jax.jit(
    lambda key: epoch_batches(key, num_pairs, config.batch_size),
    out_shardings=parallel.batch_sharded(mesh),
  )
  fresh = None
  if config.pairs == "fresh":
    index = parallel.put_replicated(class_index(sets.train.labels), mesh)
    # The class index is an argument, not a closed-over constant, so XLA does
    # not embed a 60,000-entry table in the program.
    sample = jax.jit(
      lambda key, index: sample_pairs(key, None, num_pairs, index=index),
      out_shardings=(rep, rep),
    )

    def fresh(key):
      return sample(key, index)

  state = create_train_state(keys.init, config)
  data_key_bits = np.asarray(jax.random.key_data(keys.data))
  first_epoch, start_step, partial = 1, 0, {}
  if resume:
    if checkpoint.exists(workdir):
      ckpt = checkpoint.load(workdir, state)
      if not np.array_equal(ckpt.data_key, data_key_bits):
        raise WorkdirError(
          f"The checkpoint in {workdir!r} was written with another data key; "
          "it does not belong to this config. Start over with --overwrite."
        )
      state, partial = ckpt.state, ckpt.partial_metrics
      first_epoch, start_step = ckpt.epoch + 1, ckpt.step_in_epoch
      _truncate_metrics(metrics_path, ckpt.epoch)
      print(
        f"Resuming {workdir} at epoch {first_epoch}, step {start_step} of {steps}.",
        file=out,
        flush=True,
      )
    else:
      _truncate_metrics(metrics_path, 0)
      print(f"No checkpoint in {workdir}; starting from epoch 1.", file=out, flush=True)
  state = parallel.put_replicated(state, mesh)

  writers = [ConsoleWriter(total=config.epochs, stream=out), JsonlWriter(metrics_path)]
  if tensorboard:
    writers.append(TensorBoardWriter(os.path.join(workdir, "tensorboard")))
  writer = MultiWriter(writers)

  def save(epoch, step_in_epoch, metrics):
    return checkpoint.save(
      workdir,
      checkpoint.Checkpoint(state, epoch, step_in_epoch, metrics, data_key_bits, config),
    )

  try:
    with _SigintFlag() as sigint:
      for epoch in range(first_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        epoch_key = jax.random.fold_in(keys.data, epoch)
        images, pairs, y = train
        if fresh is not None:
          pairs, y = fresh(jax.random.fold_in(epoch_key, 1))
        batches = make_batches(jax.random.fold_in(epoch_key, 0))
        bar = ProgressBar(f"epoch {epoch}/{config.epochs}", steps, enabled=progress)
        bad_step = []

        def on_chunk(done, total, host, bar=bar, bad_step=bad_step):
          bar.update(done)
          finite = np.isfinite(host["loss"])
          if not finite.all():
            bad_step.append(done - len(finite) + int(np.argmin(finite)))
            return True
          return sigint.set

        state, m, done = train_epoch(
          state,
          images,
          pairs,
          y,
          batches,
          keys.dropout,
          start=start_step,
          chunk_steps=chunk_steps,
          on_chunk=on_chunk,
        )
        bar.close()
        m = {k: np.concatenate([partial[k], m[k]]) if k in partial else m[k] for k in m}
        if bad_step:
          step = (epoch - 1) * steps + bad_step[0] + 1
          kept = (
            f"the last good checkpoint (after epoch {epoch - 1}) is kept in {workdir}"
            if checkpoint.exists(workdir)
            else "no checkpoint had been written yet"
          )
          raise NonFiniteLossError(
            f"Training stopped: the loss became non-finite at step {step} (epoch "
            f"{epoch}); {kept}. Lower --learning-rate (now {config.learning_rate}) "
            "or check the data."
          )
        if done < steps:  # Ctrl-C: keep what this epoch has done so far.
          path = save(epoch - 1, done, m)
          raise RunInterrupted(
            f"Interrupted at step {done}/{steps} of epoch {epoch}; checkpoint saved to "
            f"{path}. Resume by running the same command with --workdir {workdir} --resume."
          )
        val_metrics, _ = evaluate(state, *monitor)
        scalars = {
          "train_loss": float(np.mean(m["loss"])),
          "train_accuracy": float(np.mean(m["accuracy"])),
          **{f"val_{k}": v for k, v in sorted(to_host_scalars(val_metrics).items(), reverse=True)},
        }
        scalars["epoch_seconds"] = time.perf_counter() - t0
        writer.write_scalars(epoch, scalars)
        save(epoch, 0, {})
        start_step, partial = 0, {}
        if on_epoch is not None:
          on_epoch(epoch, scalars)
  finally:
    writer.close()

  results = final_evaluation(state, config, sets, train, test, val, workdir, plots=plots)
  results["num_pairs_per_epoch"] = num_pairs
  results["total_seconds"] = time.perf_counter() - t_start
  t = results
  print(f"* Accuracy on training set: {100 * t['train_accuracy']:0.2f}%", file=out)
  print(f"* Accuracy on test set: {100 * t['test_accuracy']:0.2f}%", file=out)
  print(f"* Test ROC AUC: {t['test_roc_auc']:.4f}", file=out)
  print(
    f"* Threshold chosen on {t['threshold_source']}: {t['threshold']:.4f}; test accuracy "
    f"at it: {100 * t['test_accuracy_at_threshold']:0.2f}%",
    file=out,
    flush=True,
  )
  atomic_write_json(os.path.join(workdir, RESULTS_NAME), results)
  return results


def final_evaluation(state, config, sets, train, test, val, workdir, *, plots=True) -> dict:
  """Accuracy at the fixed threshold, ROC AUC, and a threshold chosen honestly.

  The threshold is chosen on the held-out validation pairs when the run has
  a holdout, else on the training pairs; never on the test pairs.
  """
  train_m, train_d = evaluate(state, *train)
  test_m, test_d = evaluate(state, *test)
  train_m, test_m = to_host_scalars(train_m), to_host_scalars(test_m)
  test_d = np.asarray(test_d)
  results = {
    "train_accuracy": train_m["accuracy"],
    "train_loss": train_m["loss"],
    "test_accuracy": test_m["accuracy"],
    "test_loss": test_m["loss"],
    "test_roc_auc": evaluation.roc_auc(test_d, sets.test.y),
  }
  if val is not None:
    val_m, val_d = evaluate(state, *val)
    choose_d, choose_y, source = np.asarray(val_d), sets.val.y, "held-out validation pairs"
    results["val_accuracy"] = to_host_scalars(val_m)["accuracy"]
    results["val_roc_auc"] = evaluation.roc_auc(choose_d, choose_y)
  else:
    choose_d, choose_y, source = np.asarray(train_d), sets.train.y, "training pairs"
  threshold, chosen_acc = evaluation.best_threshold(choose_d, choose_y)
  results.update(
    {
      "threshold": threshold,
      "threshold_source": source,
      "accuracy_at_threshold_where_chosen": chosen_acc,
      "test_accuracy_at_threshold": evaluation.accuracy_at(test_d, sets.test.y, threshold),
      "fixed_threshold": config.threshold,
      "epochs": config.epochs,
      "seed": config.seed,
      "pairs": config.pairs,
      "holdout": config.holdout,
      "num_train_pairs": len(sets.train.pairs),
      "num_test_pairs": len(sets.test.pairs),
      "num_val_pairs": 0 if sets.val is None else len(sets.val.pairs),
      "backend": jax.default_backend(),
      "num_devices": len(jax.devices()),
    }
  )
  if plots:
    if plot_lib.have_matplotlib():
      plot_lib.distance_histograms(
        test_d,
        sets.test.y,
        os.path.join(workdir, "distances.png"),
        {f"fixed ({config.threshold})": config.threshold, "chosen": threshold},
        title=f"Test-pair distances (ROC AUC {results['test_roc_auc']:.4f})",
      )
    else:
      print("note: matplotlib is not installed; distances.png skipped.", file=sys.stderr)
  return results
