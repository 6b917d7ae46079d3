"""One run of K >= 1 models: `train_and_evaluate(config, workdir, data, seeds=, sweep=)`.

Seeds and a sweep make K models (`siamese_jax.training.ensemble`); whatever K,
devices and processes (`siamese_jax.training.placement`), one loop starts or
resumes, trains, checkpoints, stops cleanly and evaluates. Per model
directory (the workdir, or `<workdir>/seed_<S>/`): `config.json` first,
`metrics.jsonl` per epoch, `results.json` last; in the workdir
`checkpoint.msgpack` (every model, replaced atomically each epoch and on
Ctrl-C, so a resume is bitwise) and, with seeds, `summary.json`. Model i of
K has its own plain run's keys, data and batches, and is bitwise that run
but where models share a device and XLA's batched ops round otherwise (conv4:
docs/seeds-and-sweeps.md). Only process 0 writes, holding the lock.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

import jax
import numpy as np

from siamese_jax.core import distributed
from siamese_jax.core.config import Config
from siamese_jax.core.errors import NonFiniteLossError, SiameseJaxError, WorkdirError
from siamese_jax.core.files import RUN_FIX, atomic_write_json
from siamese_jax.core.progress import ProgressBar
from siamese_jax.data.dataset import Dataset
from siamese_jax.evaluation.final import ensemble_evaluation, final_evaluation
from siamese_jax.losses import LOSSES
from siamese_jax.rundir import checkpoint
from siamese_jax.rundir.metric_writers import (
  ConsoleWriter,
  JsonlWriter,
  MetricWriter,
  MultiWriter,
  TensorBoardWriter,
  jsonl_line,
)
from siamese_jax.rundir.results import (
  SUMMARY_NAME,
  console_line,
  headline,
  print_results,
  summarize,
)
from siamese_jax.rundir.workdir import RESULTS_NAME, clear_run, locked, prepare_workdir
from siamese_jax.sampling import SAMPLERS, sampler_name
from siamese_jax.sampling.splits import RunData
from siamese_jax.training.ensemble import Plan, value_name
from siamese_jax.training.placement import RADIUS, Placement
from siamese_jax.training.setup import build_run
from siamese_jax.training.step import train_epoch


class RunInterrupted(SiameseJaxError):
  """Stopped by Ctrl-C (exit_code 130) or SIGTERM (143) after saving a checkpoint."""

  def __init__(self, message: str, exit_code: int = 130):
    super().__init__(message)
    self.exit_code = exit_code


@dataclasses.dataclass
class Position:
  """Where training stands; `partial` is float[K, n], the metrics of `epoch`'s steps taken."""

  state: Any
  epoch: int
  step: int
  partial: dict[str, np.ndarray]
  history: list[list[str]]  # each model's metrics.jsonl lines of the finished epochs


@dataclasses.dataclass(frozen=True)
class Run:
  """What the loop needs besides the position: the models, their data, the placement."""

  config: Config  # as given: with seeds or a sweep, the shared one
  plan: Plan
  runs: tuple[RunData, ...]
  placement: Placement
  workdir: str
  out: TextIO
  checkpoints: checkpoint.Checkpoints

  @property
  def steps(self) -> int:
    return self.runs[0].steps


class _Signals:
  """Ctrl-C and SIGTERM go to `self._handle` inside the block, in the main thread.

  Both signals, whatever the process inherited: one started with SIGINT
  ignored (a background job of a script) still stops for Ctrl-C, in
  training and in the final evaluation alike.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = None
    self._old = {}

  def _handle(self, signum, frame):
    raise NotImplementedError

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
    return False


class _StopFlag(_Signals):
  """The first Ctrl-C or SIGTERM sets a flag checked between chunks; a second stops at once."""

  @property
  def set(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    if self.set:  # A second signal: stop at once.
      raise KeyboardInterrupt
    self.signum = signum


class _Evaluating(_Signals):
  """Ctrl-C or SIGTERM in the final evaluation stops at once, naming the resume that redoes it."""

  def __init__(self, workdir: str):
    super().__init__()
    self.workdir = workdir

  def _handle(self, signum, frame):
    self.signum = signum
    raise KeyboardInterrupt

  def __exit__(self, kind, value, tb):
    super().__exit__(kind, value, tb)
    if kind is KeyboardInterrupt:
      signum = self.signum or signal.SIGINT
      name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
      raise RunInterrupted(
        f"Stopped by {name} during the final evaluation; training is finished and its "
        f"checkpoint saved in {self.workdir}. Resume by running the same command with "
        f"--workdir {self.workdir} --resume: it evaluates again.",
        exit_code=128 + signum,
      ) from None
    return False


def train_and_evaluate(
  config: Config,
  workdir: str | os.PathLike,
  data: Dataset,
  *,
  seeds: Sequence[int] | None = None,
  sweep: tuple[str, Sequence[float]] | None = None,
  resume: bool = False,
  overwrite: bool = False,
  chunk_steps: int = 200,
  progress: bool = True,
  tensorboard: bool = False,
  plots: bool = True,
  devices=None,
  encoder=None,
  stdout: TextIO | None = None,
) -> dict[str, Any]:
  """Trains the Siamese network (or K of them) and evaluates it.

  Args:
    config: the hyperparameters (with seeds or a sweep, the shared ones).
    workdir: where the files go (see the module docstring).
    data: the dataset as it ships; the config says how to resize and invert it.
    seeds: one model per seed, in one program; files per seed.
    sweep: None, or ("learning_rate" | "margin", values), crossed with the
      seeds; the values are traced, so one compilation serves all.
    resume: continue from the workdir's checkpoint (more epochs: train longer).
    overwrite: replace a run already in `workdir`.
    chunk_steps: about how many steps per device dispatch; results do not depend on it.
    progress, tensorboard, plots: a progress bar on a terminal; TensorBoard
      events; `distances.png` (skipped with a note without matplotlib).
    devices: the devices to train on (all if None): one model is data-parallel
      over them, K models are spread over them.
    encoder: a Flax module float[N, H, W] -> float[N, D] called as
      `encoder(x, train=...)`, or None for the config's; resume and
      `load_trained` need the same one.
    stdout: where the per-epoch lines go (sys.stdout if None).

  Returns:
    results.json's contents (summary.json's with seeds or a sweep); {} in
    processes other than 0.

  Raises:
    SiameseJaxError subclasses: bad config or workdir, a non-finite loss, or
    an interruption (after checkpointing).
  """
  t_start = time.perf_counter()
  out = stdout or sys.stdout
  workdir = os.fspath(workdir)
  # What the data is, not where it lies: a resumed run is matched to it by this.
  config = dataclasses.replace(config, data_fingerprint=data.fingerprint())
  # Every check of the config and data happens before the workdir is touched.
  setup = build_run(
    config, data, workdir=workdir, seeds=seeds, sweep=sweep, devices=devices, encoder=encoder
  )
  plan, runs, placement, initial = setup.plan, setup.runs, setup.placement, setup.initial
  run = Run(
    config, plan, runs, placement, workdir, out, checkpoint.Checkpoints(workdir, config, plan.dirs)
  )
  writer = distributed.is_writer()
  with locked(workdir) if writer else contextlib.nullcontext():
    rewrite = []
    if writer:
      rewrite = _prepare(run, resume=resume, overwrite=overwrite)
    else:
      print(
        f"process {jax.process_index()} of {jax.process_count()}: training with the others; "
        f"process 0 writes {workdir}",
        file=sys.stderr,
        flush=True,
      )
    position = _start_or_resume(run, initial, resume=resume, rewrite=rewrite)
    if plan.stacked and writer:
      print(
        f"{plan.describe()} in one program on {placement.devices} device(s)", file=out, flush=True
      )
    writers = _make_writers(run, tensorboard=tensorboard)
    try:
      state = _train_epochs(run, position, writers, chunk_steps=chunk_steps, progress=progress)
      host = placement.to_host(state)  # every model's final state, in process 0
    except jax.errors.JaxRuntimeError as e:
      if jax.process_count() == 1:
        raise  # one process: not a lost peer, a bug worth its traceback
      raise distributed.lost_peer(e, workdir) from None
    finally:
      for w in writers:
        w.close()
    if not writer:
      return {}
    with _Evaluating(workdir):  # Ctrl-C or SIGTERM now: the resume command, as in training
      return _finish(run, placement.singles(host), encoder=encoder, plots=plots, t_start=t_start)


def _prepare(run: Run, *, resume: bool, overwrite: bool) -> list[str]:
  """Each model's directory new, checked or cleared; returns those a resume rewrites."""
  if overwrite:  # everything any earlier run wrote here, its seed_* dirs too
    clear_run(run.workdir)
  return [
    d
    for c, d in zip(run.plan.configs, run.plan.dirs, strict=True)
    if prepare_workdir(d, c, resume=resume, overwrite=overwrite)
  ]


def _start_or_resume(run: Run, initial, *, resume: bool, rewrite: list[str]) -> Position:
  """The starting position: fresh, or the verified checkpoint (nothing changes before)."""
  writer = distributed.is_writer()
  position = Position(initial, 1, 0, {}, [[] for _ in run.plan.dirs])
  if resume:
    ckpt = run.checkpoints.restore(
      jax.device_get(initial), run.plan.configs, rewrite=rewrite, write=writer,
      check=lambda c: _check_keys(run, np.asarray(c.data_key)),
    )  # fmt: skip
    if ckpt is not None:
      position = Position(
        ckpt.state, ckpt.epoch + 1, ckpt.step_in_epoch, ckpt.partial_metrics, ckpt.history
      )
    if writer:
      said = f"at epoch {position.epoch}, step {position.step} of {run.steps}"
      print(
        f"Resuming {run.workdir} {said}." if ckpt else
        f"No checkpoint in {run.workdir}; starting from epoch 1.", file=run.out, flush=True,
      )  # fmt: skip
  position.state = run.placement.place(position.state)
  return position


def _check_keys(run: Run, saved: np.ndarray) -> None:
  """Refuses a checkpoint of other models, naming the order when only the order differs."""
  here = run.placement.key_bits()
  if np.array_equal(saved, here):
    return
  saved, here = saved.reshape(-1, here.shape[-1]), here.reshape(-1, here.shape[-1])
  rows = [tuple(r) for r in here]
  if len(saved) == len(here) and sorted(map(tuple, saved)) == sorted(rows):
    seeds = [run.plan.configs[rows.index(tuple(r))].seed for r in saved]
    raise WorkdirError(
      f"The checkpoint in {run.workdir!r} holds the same seeds in another order. Resume "
      f"with --seeds {','.join(map(str, dict.fromkeys(seeds)))}, the order the run was "
      "started with; nothing was changed."
    )
  raise WorkdirError(
    f"The checkpoint in {run.workdir!r} was written for other models (other seeds, sweep or "
    "data split). Resume with the run's own --seed/--seeds and --sweep, or start a new run in "
    "another --workdir; nothing was changed."
  )


def _make_writers(run: Run, *, tensorboard: bool) -> list[MetricWriter]:
  """Each model's metrics.jsonl (and TensorBoard), a plain run's console; nothing off process 0."""
  if not distributed.is_writer():
    return [MultiWriter([]) for _ in run.plan.dirs]
  writers = []
  for d in run.plan.dirs:
    sinks = [JsonlWriter(os.path.join(d, checkpoint.METRICS_NAME))]
    if not run.plan.stacked:
      sinks.insert(0, ConsoleWriter(total=run.config.epochs, stream=run.out))
    if tensorboard:
      sinks.append(TensorBoardWriter(os.path.join(d, "tensorboard")))
    writers.append(MultiWriter(sinks))
  return writers


def _save(run: Run, host_state, epoch: int, step_in_epoch: int, metrics, history) -> str:
  """Writes the run's checkpoint (process 0 only); returns its path."""
  if not distributed.is_writer():
    return os.path.join(run.workdir, checkpoint.CHECKPOINT_NAME)
  bits = run.placement.key_bits()
  return run.checkpoints.save(host_state, epoch, step_in_epoch, metrics, history, bits)


def _train_epochs(run: Run, position: Position, writers, *, chunk_steps: int, progress: bool):
  """Trains from `position` to the last epoch, logging and checkpointing each."""
  with _StopFlag() as stop:
    for epoch in range(position.epoch, run.config.epochs + 1):
      t0 = time.perf_counter()
      state, m = _train_one_epoch(run, position, stop, chunk_steps, progress)
      vals = run.placement.validate(state)
      seconds = time.perf_counter() - t0  # training plus validation
      radii = [val.pop(RADIUS) for val in vals]
      lines = []
      for i, (writer, val) in enumerate(zip(writers, vals, strict=True)):
        scalars = {
          "train_loss": float(np.mean(m["loss"][i])),
          "train_accuracy": float(np.mean(m["accuracy"][i])),
          **val,
          "epoch_seconds": seconds,
        }
        writer.write_scalars(epoch, scalars)
        lines.append(scalars)
      _say_if_collapsed(run, epoch, radii)
      history = [h + [jsonl_line(epoch, s)] for h, s in zip(position.history, lines, strict=True)]
      _save(run, run.placement.to_host(state), epoch, 0, {}, history)
      if run.plan.stacked and distributed.is_writer():
        print(console_line(epoch, run.config.epochs, lines), file=run.out, flush=True)
      position = Position(state, epoch + 1, 0, {}, history)
  return position.state


# Below this every distance between two validation embeddings, the
# embeddings have collapsed: the model can tell no class apart. 0.5% of the
# unit sphere's diameter, above what a run collapsed to one direction keeps
# (docs/losses.md).
COLLAPSE_FLOOR = 1e-2


def _say_if_collapsed(run: Run, epoch: int, radii: list[float]) -> None:
  """One line on stderr when a model's validation embeddings lie within `COLLAPSE_FLOOR`."""
  # Twice the radius around their mean bounds every distance between two.
  collapsed = [i for i, r in enumerate(radii) if 2 * r < COLLAPSE_FLOOR]
  if not collapsed or not distributed.is_writer():
    return
  which = ""
  if run.plan.stacked:
    which = f" of model(s) {', '.join(os.path.basename(run.plan.dirs[i]) for i in collapsed)}"
  print(
    f"warning: epoch {epoch}: the embeddings{which} have collapsed: every distance between "
    f"two validation images is below {COLLAPSE_FLOOR:g}, so none tells classes apart. The run "
    f"goes on; if it stays so, lower --learning-rate (now {run.config.learning_rate:g}) or "
    "choose another --loss or its parameters (docs/losses.md).",
    file=sys.stderr,
    flush=True,
  )


def _train_one_epoch(run: Run, position: Position, stop, chunk_steps: int, progress: bool):
  """Trains the rest of `position.epoch`; returns (state, float[K, steps] metrics).

  Raises NonFiniteLossError (naming the step and models) or, after Ctrl-C and
  the mid-epoch checkpoint, RunInterrupted.
  """
  placement, epoch, steps = run.placement, position.epoch, run.steps
  data, batches = placement.epoch_inputs(epoch)
  label = f"epoch {epoch}/{run.config.epochs}"
  if run.plan.stacked:
    label += f", {run.plan.size} models"
  bar = ProgressBar(label, steps, enabled=progress and distributed.is_writer())
  bad_step = []

  def on_chunk(done, total, host):
    bar.update(done)
    finite = np.isfinite(host["loss"]).reshape(placement.num_models, -1).all(axis=0)
    if not finite.all():
      bad_step.append(done - len(finite) + int(np.argmin(finite)))
      return True
    return placement.agree(stop.set)

  state, m, done = train_epoch(
    position.state, placement.images, data, batches, placement.dropout_keys,
    start=position.step, chunk_steps=chunk_steps, on_chunk=on_chunk,
    chunk_fn=placement.chunk_fn, fetch=placement.fetch,
  )  # fmt: skip
  bar.close()
  m = {k: np.reshape(v, (placement.num_models, -1)) for k, v in m.items()}
  m = {k: np.concatenate([position.partial[k], v], axis=-1) if k in position.partial else v
       for k, v in m.items()}  # fmt: skip
  if bad_step:
    step = (epoch - 1) * steps + bad_step[0] + 1
    which = ""
    if run.plan.stacked:
      names = [os.path.relpath(d, run.workdir) for d, row in zip(run.plan.dirs, m["loss"],
               strict=True) if not np.isfinite(row).all()]  # fmt: skip
      which = f" of {', '.join(names)}"
    kept = (
      f"the last good checkpoint (after epoch {epoch - 1}) is kept in {run.workdir}"
      if run.checkpoints.exists()
      else "no checkpoint had been written yet"
    )
    if step == 1:  # before any update: the loss's own settings, or the data, overflow
      params = LOSSES[run.config.loss].params(run.config)
      shown = ", ".join(f"--{LOSSES[run.config.loss].fields[k].replace('_', '-')} {v:g}"
                        for k, v in params.items())  # fmt: skip
      hint = (
        f"The first step, before any update, was already non-finite: not the learning rate. "
        f"Check the loss's parameters ({shown or 'none'}): a value whose square or exponential "
        "overflows float32 cannot train. Else check the data."
      )
    else:
      hint = f"Lower --learning-rate (now {run.config.learning_rate}) or check the data."
    raise NonFiniteLossError(
      f"Training stopped: the loss{which} became non-finite at step {step} (epoch "
      f"{epoch}); {kept}. {hint}"
    )
  if done < steps:  # Ctrl-C or SIGTERM: keep what this epoch has done so far.
    path = _save(run, placement.to_host(state), epoch - 1, done, m, position.history)
    name = "SIGTERM" if stop.signum == signal.SIGTERM else "Ctrl-C"
    raise RunInterrupted(
      f"Stopped by {name} at step {done}/{steps} of epoch {epoch}; checkpoint saved to "
      f"{path}. Resume by running the same command with --workdir {run.workdir} --resume.",
      exit_code=128 + (stop.signum or signal.SIGINT),
    )
  return state, m


def _finish(run: Run, states, *, encoder, plots: bool, t_start: float) -> dict[str, Any]:
  """Each model's final evaluation and files; summary.json for several (process 0)."""
  plan, out = run.plan, run.out
  all_results = []
  for c, d, r, state in zip(plan.configs, plan.dirs, run.runs, states, strict=True):
    results = final_evaluation(state, c, r, d, plots=plots)
    if encoder is not None:  # load_trained needs to be told which one.
      results["encoder"] = f"custom ({type(encoder).__name__})"
    results[f"num_{SAMPLERS[sampler_name(c)].rows}_per_epoch"] = r.per_epoch
    if plan.stacked:
      results["num_seeds_in_program"] = plan.size
    results["total_seconds"] = time.perf_counter() - t_start
    if plan.stacked:  # its own checkpoint, as its plain run leaves one
      bits = np.asarray(jax.random.key_data(r.keys.data))
      checkpoint.save(d, checkpoint.Checkpoint(state, c.epochs, 0, {}, bits), c)
      print(f"{os.path.relpath(d, run.workdir)}:", file=out)
    print_results(results, out)
    atomic_write_json(os.path.join(d, RESULTS_NAME), results, fix=RUN_FIX)
    all_results.append(results)
  if not plan.stacked:
    return all_results[0]
  if plan.sweep is None:
    summary = summarize(all_results)
    lines = headline(summary)
    if plan.size > 1:  # the seeds as one model: what load_trained makes of this workdir
      t = time.perf_counter()
      summary["ensemble"] = ensemble_evaluation(states, plan.configs[0], run.runs[0])
      summary["ensemble"]["seconds"] = time.perf_counter() - t
      print(f"The {plan.size} seeds as one model (load_trained of {run.workdir}):", file=out)
      print_results(summary["ensemble"], out)
  else:
    field, values = plan.sweep
    summary = {"sweep": {"field": field, "values": list(values)}, "by_value": {}}
    lines = []
    for v in values:
      group = [
        res for res, c in zip(all_results, plan.configs, strict=True) if getattr(c, field) == v
      ]
      name = value_name(v)
      summary["by_value"][name] = summarize(group)
      lines += [f"{field} {name}: {line}" for line in headline(summary["by_value"][name])]
  summary["seeds"] = sorted({c.seed for c in plan.configs})
  summary["total_seconds"] = time.perf_counter() - t_start
  atomic_write_json(os.path.join(run.workdir, SUMMARY_NAME), summary, fix=RUN_FIX)
  for line in lines:
    print(line, file=out)
  out.flush()
  return summary
