"""One whole run: `train_and_evaluate(config, workdir, data)`.

What a run leaves in its workdir:

* `config.json`, written before training starts;
* `metrics.jsonl`, one JSON object per finished epoch;
* `checkpoint.msgpack`, replaced atomically after every epoch (and when the
  run is interrupted with Ctrl-C), so `resume=True` continues it bit for bit;
* `results.json`, written last: train and test pair accuracy and timings.

`train_and_evaluate` reads as its phases: the data on the devices
(`place_data`), the workdir and the starting state, new or resumed
(`start_or_resume`), the epoch loop (`train_epochs`, one `train_one_epoch`
at a time), the final evaluation, and results.json.

Keys: see `siamese_jax.splits`. Nothing random depends on wall-clock,
chunking, or whether the run was resumed.
"""

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import jax
import numpy as np

from siamese_jax import checkpoint, distributed, parallel
from siamese_jax.config import Config
from siamese_jax.dataset import MnistData
from siamese_jax.errors import ConfigError, NonFiniteLossError, SiameseJaxError, WorkdirError
from siamese_jax.files import atomic_write_json
from siamese_jax.final_evaluation import final_evaluation
from siamese_jax.metric_writers import (
  ConsoleWriter,
  JsonlWriter,
  MetricWriter,
  MultiWriter,
  TensorBoardWriter,
)
from siamese_jax.pairs import class_index, sample_pairs
from siamese_jax.progress import ProgressBar
from siamese_jax.splits import PairSet, PairSets, RunKeys, make_pair_sets, run_keys
from siamese_jax.train import (
  TrainState,
  create_train_state,
  epoch_batches,
  evaluate,
  to_host_scalars,
  train_epoch,
)
from siamese_jax.workdir import METRICS_NAME, RESULTS_NAME, prepare_workdir, truncate_metrics

# Re-exported: these names lived here before the split into modules.
__all__ = [
  "PairSet",
  "PairSets",
  "RunData",
  "RunInterrupted",
  "RunKeys",
  "make_pair_sets",
  "run_keys",
  "train_and_evaluate",
]


class RunInterrupted(SiameseJaxError):
  """The run was stopped by Ctrl-C after saving a checkpoint."""


DeviceSplit = tuple[jax.Array, jax.Array, jax.Array]  # images, pairs, y on the devices


@dataclasses.dataclass(frozen=True)
class RunData:
  """Everything the epoch loop and the evaluation read, placed on the devices.

  Attributes:
    keys: the run's named keys.
    sets: the splits and their fixed pairs, on the host.
    mesh: the data-parallel mesh.
    train, test, val: (images, pairs, y) of each split, replicated.
    num_pairs: training pairs per epoch.
    steps: optimizer steps per epoch (num_pairs // batch_size).
    make_batches: epoch key -> int32[steps, B] batches, split over the mesh.
    fresh: epoch key -> (pairs, y) of fresh pairs, or None for fixed pairs.
  """

  keys: RunKeys
  sets: PairSets
  mesh: jax.sharding.Mesh
  train: DeviceSplit
  test: DeviceSplit
  val: DeviceSplit | None
  num_pairs: int
  steps: int
  make_batches: Callable[[jax.Array], jax.Array]
  fresh: Callable[[jax.Array], tuple[jax.Array, jax.Array]] | None

  @property
  def monitor(self) -> DeviceSplit:
    """The per-epoch validation split: held-out images, else (as the original) test."""
    return self.val if self.val is not None else self.test


def check_data(config: Config, data: MnistData, devices=None):
  """Makes the splits and checks the config against them and the devices.

  Runs before anything is written, so a bad config leaves no workdir behind.

  Returns:
    (keys, sets, num_pairs, steps, mesh).

  Raises:
    ConfigError: a batch larger than the data, or one that does not split
      over the devices; a holdout that leaves too few images.
  """
  keys = run_keys(config.seed)
  sets = make_pair_sets(keys, data, config.holdout, config.train_classes)
  # Pairs per epoch: the fixed pairs, or as many fresh ones as the original
  # makes of the whole training split (108,400 on MNIST, holdout or not).
  if config.pairs == "fresh":
    num_pairs = sets.fresh_pairs
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
  return keys, sets, num_pairs, steps, mesh


def place_data(config: Config, keys, sets, num_pairs, steps, mesh) -> RunData:
  """Puts the splits on the devices and builds the per-epoch samplers.

  Everything lives on the devices, replicated; only batches are split.
  """

  def put(split: PairSet | None):
    if split is None:
      return None
    return parallel.put_replicated((split.images, split.pairs, split.y), mesh)

  make_batches = jax.jit(
    lambda key: epoch_batches(key, num_pairs, config.batch_size),
    out_shardings=parallel.batch_sharded(mesh),
  )
  fresh = None
  if config.pairs == "fresh":
    rep = parallel.replicated(mesh)
    k = len(sets.train.classes)
    index = parallel.put_replicated(class_index(sets.train.labels, k), mesh)
    # The class index is an argument, not a closed-over constant, so XLA does
    # not embed a 60,000-entry table in the program.
    sample = jax.jit(
      lambda key, index: sample_pairs(key, None, num_pairs, k, index=index),
      out_shardings=(rep, rep),
    )

    def fresh(key):
      return sample(key, index)

  return RunData(
    keys, sets, mesh, put(sets.train), put(sets.test), put(sets.val), num_pairs, steps,
    make_batches, fresh,
  )  # fmt: skip


@dataclasses.dataclass
class Position:
  """Where training stands: the state, the next epoch and the step in it.

  `partial` holds the per-step metrics of the steps of `epoch` already taken
  (a run resumed mid-epoch reports the whole epoch's mean).
  """

  state: TrainState
  epoch: int
  step: int
  partial: dict[str, np.ndarray]


def start_or_resume(
  config: Config, run: RunData, workdir: str, *, resume: bool, out, encoder=None
) -> Position:
  """The starting state: fresh from the init key, or the workdir's checkpoint.

  `encoder` is a custom Flax encoder, or None for the config's built-in one.

  Raises:
    WorkdirError: the checkpoint belongs to another config.
  """
  image_shape = run.train[0].shape[1:]
  state = create_train_state(run.keys.init, config, encoder=encoder, image_shape=image_shape)
  position = Position(state, 1, 0, {})
  metrics_path = os.path.join(workdir, METRICS_NAME)
  if resume and checkpoint.exists(workdir):
    ckpt = checkpoint.load(workdir, state)
    if not np.array_equal(ckpt.data_key, data_key_bits(run)):
      raise WorkdirError(
        f"The checkpoint in {workdir!r} was written with another data key; "
        "it does not belong to this config. Start over with --overwrite."
      )
    position = Position(ckpt.state, ckpt.epoch + 1, ckpt.step_in_epoch, ckpt.partial_metrics)
    if distributed.is_writer():
      truncate_metrics(metrics_path, ckpt.epoch)
      print(
        f"Resuming {workdir} at epoch {position.epoch}, step {position.step} of {run.steps}.",
        file=out,
        flush=True,
      )
  elif resume:
    if distributed.is_writer():
      truncate_metrics(metrics_path, 0)
      print(f"No checkpoint in {workdir}; starting from epoch 1.", file=out, flush=True)
  position.state = parallel.put_replicated(position.state, run.mesh)
  return position


def data_key_bits(run: RunData) -> np.ndarray:
  """The data key's raw bits, stored in checkpoints (typed keys do not serialize)."""
  return np.asarray(jax.random.key_data(run.keys.data))


def save_checkpoint(config, run, workdir, state, epoch, step_in_epoch, metrics) -> str:
  """Writes the run's checkpoint (process 0 only); returns its path."""
  if not distributed.is_writer():
    return os.path.join(workdir, checkpoint.CHECKPOINT_NAME)
  return checkpoint.save(
    workdir,
    checkpoint.Checkpoint(state, epoch, step_in_epoch, metrics, data_key_bits(run), config),
  )


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


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """How the epoch loop runs and reports; none of it changes the results."""

  chunk_steps: int = 200
  progress: bool = True
  on_epoch: Callable[[int, dict[str, float]], None] | None = None


def train_epochs(
  config: Config,
  run: RunData,
  workdir: str,
  position: Position,
  writer: MetricWriter,
  options: LoopOptions,
) -> TrainState:
  """Trains from `position` to the last epoch, logging and checkpointing each."""
  with _SigintFlag() as sigint:
    for epoch in range(position.epoch, config.epochs + 1):
      position = train_one_epoch(config, run, workdir, position, options, sigint)
      state = position.state
      t0, m = position.partial.pop("_t0"), position.partial
      val_metrics, _ = evaluate(state, *run.monitor)
      scalars = {
        "train_loss": float(np.mean(m["loss"])),
        "train_accuracy": float(np.mean(m["accuracy"])),
        **{f"val_{k}": v for k, v in sorted(to_host_scalars(val_metrics).items(), reverse=True)},
      }
      scalars["epoch_seconds"] = time.perf_counter() - t0
      writer.write_scalars(epoch, scalars)
      save_checkpoint(config, run, workdir, state, epoch, 0, {})
      position = Position(state, epoch + 1, 0, {})
      if options.on_epoch is not None:
        options.on_epoch(epoch, scalars)
  return position.state


def train_one_epoch(config, run, workdir, position, options, sigint) -> Position:
  """Trains the rest of `position.epoch`.

  Returns:
    The position at the epoch's end; `partial` holds the whole epoch's
    per-step metrics and, under "_t0", the time the epoch started.

  Raises:
    NonFiniteLossError: naming the step, the last good checkpoint kept.
    RunInterrupted: after Ctrl-C, once the mid-epoch checkpoint is saved.
  """
  t0 = time.perf_counter()
  epoch = position.epoch
  epoch_key = jax.random.fold_in(run.keys.data, epoch)
  images, pairs, y = run.train
  if run.fresh is not None:
    pairs, y = run.fresh(jax.random.fold_in(epoch_key, 1))
  batches = run.make_batches(jax.random.fold_in(epoch_key, 0))
  bar = ProgressBar(f"epoch {epoch}/{config.epochs}", run.steps, enabled=options.progress)
  bad_step = []

  def on_chunk(done, total, host):
    bar.update(done)
    finite = np.isfinite(host["loss"])
    if not finite.all():
      bad_step.append(done - len(finite) + int(np.argmin(finite)))
      return True
    return sigint.set

  state, m, done = train_epoch(
    position.state,
    images,
    pairs,
    y,
    batches,
    run.keys.dropout,
    start=position.step,
    chunk_steps=options.chunk_steps,
    on_chunk=on_chunk,
  )
  bar.close()
  partial = position.partial
  m = {k: np.concatenate([partial[k], m[k]]) if k in partial else m[k] for k in m}
  if bad_step:
    step = (epoch - 1) * run.steps + bad_step[0] + 1
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
  if done < run.steps:  # Ctrl-C: keep what this epoch has done so far.
    path = save_checkpoint(config, run, workdir, state, epoch - 1, done, m)
    raise RunInterrupted(
      f"Interrupted at step {done}/{run.steps} of epoch {epoch}; checkpoint saved to "
      f"{path}. Resume by running the same command with --workdir {workdir} --resume."
    )
  return Position(state, epoch, done, {**m, "_t0": t0})


def make_writer(config: Config, workdir: str, out, *, tensorboard: bool) -> MetricWriter:
  """Console line, metrics.jsonl and optionally TensorBoard, behind one interface.

  Processes other than 0 get a writer that writes nothing.
  """
  if not distributed.is_writer():
    return MultiWriter([])
  writers = [
    ConsoleWriter(total=config.epochs, stream=out),
    JsonlWriter(os.path.join(workdir, METRICS_NAME)),
  ]
  if tensorboard:
    writers.append(TensorBoardWriter(os.path.join(workdir, "tensorboard")))
  return MultiWriter(writers)


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
  encoder=None,
  stdout: TextIO | None = None,
  on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
  """Trains the Siamese network on a dataset's pairs and evaluates it.

  Args:
    config: the run's hyperparameters.
    workdir: where config.json, metrics.jsonl, the checkpoint, results.json
      and the pictures go.
    data: the dataset (see `siamese_jax.data.load_data`).
    resume: continue the run in `workdir` from its checkpoint.
    overwrite: replace a run already in `workdir`.
    chunk_steps: about how many steps run per device dispatch; the progress
      bar moves once per chunk. Results do not depend on it.
    progress: draw a progress bar on stderr when it is a terminal.
    tensorboard: also write TensorBoard event files into the workdir.
    plots: write `distances.png` (needs matplotlib; skipped with a note if
      it is not installed).
    devices: the devices to train on, data-parallel (all if None).
    encoder: a Flax module mapping float[N, H, W] images to float[N, D]
      embeddings, called as `encoder(x, train=...)`; None for the config's
      built-in one. A resumed run, and `load_trained`, need the same one.
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
  workdir = os.fspath(workdir)
  # Data and devices: every config check happens before the workdir is touched.
  checked = check_data(config, data, devices)
  if distributed.is_writer():
    prepare_workdir(workdir, config, resume=resume, overwrite=overwrite)
  else:
    print(
      f"process {jax.process_index()} of {jax.process_count()}: training with the others; "
      f"process 0 writes {workdir}",
      file=sys.stderr,
      flush=True,
    )
  run = place_data(config, *checked)
  # Workdir: a new run, or the checkpoint of the one to resume.
  position = start_or_resume(config, run, workdir, resume=resume, out=out, encoder=encoder)
  # The epoch loop.
  writer = make_writer(config, workdir, out, tensorboard=tensorboard)
  try:
    state = train_epochs(
      config, run, workdir, position, writer, LoopOptions(chunk_steps, progress, on_epoch)
    )
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise  # one process: not a lost peer, a bug worth its traceback
    raise distributed.lost_peer(e, workdir) from None
  finally:
    writer.close()
  # Final evaluation and results, by process 0 alone.
  if jax.process_count() > 1:
    if not distributed.is_writer():
      return {}
    # Its own copy of the state and data on one local device: nothing here
    # is a collective, so the other processes may finish.
    run = place_data(config, *checked[:4], parallel.data_mesh(jax.local_devices()[:1]))
    state = jax.device_put(parallel.to_host(state), jax.local_devices()[0])
  results = final_evaluation(state, config, run, workdir, plots=plots)
  if encoder is not None:  # load_trained needs to be told which one.
    results["encoder"] = f"custom ({type(encoder).__name__})"
  results["num_pairs_per_epoch"] = run.num_pairs
  results["total_seconds"] = time.perf_counter() - t_start
  print_results(results, out)
  atomic_write_json(os.path.join(workdir, RESULTS_NAME), results)
  return results


def print_results(t: dict[str, Any], out) -> None:
  """The console's summary of results.json."""
  print(f"* Accuracy on training set: {100 * t['train_accuracy']:0.2f}%", file=out)
  print(f"* Accuracy on test set: {100 * t['test_accuracy']:0.2f}%", file=out)
  print(f"* Test ROC AUC: {t['test_roc_auc']:.4f}", file=out)
  print(
    f"* Threshold chosen on {t['threshold_source']}: {t['threshold']:.4f}; test accuracy "
    f"at it: {100 * t['test_accuracy_at_threshold']:0.2f}%",
    file=out,
  )
  for split in ("test", "val"):
    if t.get(f"{split}_precision_at_1") is not None:
      print(f"* {_retrieval_line(t, split + '_')} ({split} images)", file=out)
  for group in ("seen", "unseen"):
    if f"test_{group}_images" in t:
      p = f"test_{group}_"
      pair = (
        f"accuracy {100 * t[p + 'accuracy']:0.2f}%, at threshold "
        f"{100 * t[p + 'accuracy_at_threshold']:0.2f}%, ROC AUC {t[p + 'roc_auc']:.4f}; "
        if t[p + "accuracy"] is not None
        else "no pair metrics (fewer than 2 classes); "
      )
      print(
        f"* {group} classes {','.join(map(str, t[p + 'classes']))}: {pair}{_retrieval_line(t, p)}",
        file=out,
      )
  out.flush()


def _retrieval_line(t: dict[str, Any], p: str) -> str:
  if t.get(p + "precision_at_1") is None:
    return "no retrieval metrics (no class with 2 images)"
  line = f"P@1 {100 * t[p + 'precision_at_1']:0.2f}%, MAP@R {100 * t[p + 'map_at_r']:0.2f}%"
  if p + "r_precision" in t:
    line += f", R-Precision {100 * t[p + 'r_precision']:0.2f}%"
  skipped = t.get(p + "retrieval_skipped_queries")
  if skipped:
    line += f" ({skipped} queries skipped: no other image of their class)"
  return line
