"""Many seeds in one program: `train_and_evaluate_seeds(config, seeds, workdir, data)`.

K independent models train in one jitted program: their train states,
dropout keys, pairs and batches are stacked along a leading seed axis, and
the scanned epoch (`train.train_chunk`'s body) is `jax.vmap`ped over it.
`train_step` keeps its one-model contract; this module only batches it.

Every seed uses exactly the keys, pairs, holdout and shuffles of its own
single-seed run (each is built by `run.check_data` with that seed), so the
two runs differ only in how XLA computes the batched program.

With several devices the seed axis is split over a 1-D mesh named "seeds":
each device trains K / d of the models, and nothing crosses devices while
training. d is the largest divisor of K that is at most the device count
(3 seeds on 2 devices use 1 device; 4 seeds on 3 devices use 2): every
device then holds the same number of models and the program stays one SPMD
program. Data-parallel training of one model is the other use of several
devices (`siamese_jax.parallel`); the two do not combine.

What it writes:

* `<workdir>/seed_<S>/`: each seed's config.json, metrics.jsonl,
  results.json and final checkpoint.msgpack, as a single run writes them
  (so `load_trained(<workdir>/seed_<S>)` works);
* `<workdir>/checkpoint.msgpack`: the stacked state after every epoch (and
  on Ctrl-C), from which `resume=True` continues all seeds at once;
* `<workdir>/summary.json`: mean, std (ddof=1), min and max over the seeds
  of every numeric result.
"""

import dataclasses
import functools
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax import checkpoint, parallel
from siamese_jax.config import Config
from siamese_jax.dataset import Dataset
from siamese_jax.errors import ConfigError, NonFiniteLossError, WorkdirError
from siamese_jax.files import atomic_write_json
from siamese_jax.final_evaluation import final_evaluation
from siamese_jax.metric_writers import JsonlWriter
from siamese_jax.pairs import class_index, sample_pairs
from siamese_jax.progress import ProgressBar
from siamese_jax.run import (
  RunInterrupted,
  _SigintFlag,
  check_data,
  place_data,
  print_results,
)
from siamese_jax.train import (
  _train_step,
  create_train_state,
  epoch_batches,
  evaluate,
  gather_batch,
  to_host_scalars,
  train_epoch,
)
from siamese_jax.workdir import METRICS_NAME, RESULTS_NAME, prepare_workdir, truncate_metrics

AXIS = "seeds"
SUMMARY_NAME = "summary.json"


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def seed_mesh(num_seeds: int, devices=None) -> Mesh:
  """A 1-D mesh over the most devices (at most all) that divide the seed count."""
  devices = list(jax.devices() if devices is None else devices)
  d = max(k for k in range(1, len(devices) + 1) if num_seeds % k == 0)
  return Mesh(np.asarray(devices[:d]), (AXIS,))


def stack(trees: Sequence[Any]) -> Any:
  """[tree, tree, ...] -> one tree whose leaves have a leading seed axis.

  The first tree's structure is used: TrainStates made one by one carry
  equal but distinct static parts (apply_fn, tx), which tree.map would
  refuse to zip.
  """
  leaves = [jax.tree.leaves(t) for t in trees]
  stacked = [np.stack([np.asarray(x) for x in xs]) for xs in zip(*leaves, strict=True)]
  return jax.tree.unflatten(jax.tree.structure(trees[0]), stacked)


def unstack(tree: Any, i: int) -> Any:
  """The i-th model of a stacked tree, on the host."""
  return jax.tree.map(lambda x: np.asarray(x[i]), tree)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("length", "shared_images"))
def train_chunk_seeds(states, images, pairs, y, batches, start, keys, *, length, shared_images):
  """`train.train_chunk` for K models at once: the same scan body, vmapped.

  Args:
    states: stacked TrainState, leading axis K (donated).
    images: uint8[N, H, W] shared by all seeds, or uint8[K, N, H, W]
      (with a holdout every seed trains on other images).
    pairs: int32[K, P, 2]; y: float32[K, P].
    batches: int32[K, S, B]; start: int32[]; keys: K dropout keys.
    length: steps in this chunk (static).
    shared_images: whether `images` has no seed axis (static).

  Returns:
    (states, {"loss": float32[K, length], "accuracy": float32[K, length]}).
  """

  def one(state, images, pairs, y, batches, key):
    rows = jax.lax.dynamic_slice_in_dim(batches, start, length)

    def body(state, idx):
      return _train_step(state, gather_batch(images, pairs, y, idx), key)

    return jax.lax.scan(body, state, rows)

  in_axes = (0, None if shared_images else 0, 0, 0, 0, 0)
  return jax.vmap(one, in_axes=in_axes)(states, images, pairs, y, batches, keys)


@dataclasses.dataclass(frozen=True)
class SeedsData:
  """The K seeds' training data on the devices, split along the seed axis."""

  configs: list[Config]
  checked: list[tuple]  # check_data's result per seed (keys, sets, pairs, steps, mesh)
  mesh: Mesh
  images: jax.Array
  shared_images: bool
  pairs: jax.Array | None  # int32[K, P, 2] fixed pairs; None with fresh pairs
  y: jax.Array | None
  dropout_keys: jax.Array
  data_keys: jax.Array
  num_pairs: int
  steps: int
  fresh: Any  # (K data keys, epoch) -> (pairs, y), or None


def place_seeds(config: Config, seeds: Sequence[int], data: Dataset, devices=None) -> SeedsData:
  """Builds each seed's single-run data, checks they stack, places them.

  Raises:
    ConfigError: a fixed-pairs holdout makes the seeds' pair counts differ.
  """
  configs = [dataclasses.replace(config, seed=s) for s in seeds]
  checked = [check_data(c, data, devices=jax.devices()[:1]) for c in configs]
  counts = {c[2] for c in checked}  # pairs per epoch: fresh pairs are as many for every seed
  if len(counts) > 1:
    raise ConfigError(
      f"With --holdout {config.holdout} and fixed pairs, the seeds keep different numbers of "
      f"training pairs ({', '.join(f'{c[2]:,}' for c in checked)}), which one program cannot "
      "stack. Use --pairs fresh (as many pairs for every seed), or run the seeds one by one."
    )
  mesh = seed_mesh(len(seeds), devices)
  split = NamedSharding(mesh, PartitionSpec(AXIS))
  rep = NamedSharding(mesh, PartitionSpec())
  sets = [c[1] for c in checked]
  shared = config.holdout == 0  # without a holdout every seed trains on all images

  def put(x, sharding):
    return jax.device_put(np.asarray(x), sharding)

  images = (
    put(sets[0].train.images, rep) if shared else put(stack([s.train.images for s in sets]), split)
  )
  key_bits = lambda name: np.stack([jax.random.key_data(getattr(c[0], name)) for c in checked])  # noqa: E731
  fresh = None
  if config.pairs == "fresh":
    k = len(sets[0].train.classes)
    index = jax.device_put(stack([class_index(s.train.labels, k) for s in sets]), split)
    n = checked[0][2]
    sample = jax.jit(
      jax.vmap(lambda key, index: sample_pairs(key, None, n, k, index=index)),
      out_shardings=(split, split),
    )

    def fresh(keys):
      return sample(keys, index)

  return SeedsData(
    configs, checked, mesh, images, shared,
    *((None, None) if fresh else (put(stack([s.train.pairs for s in sets]), split), put(stack([s.train.y for s in sets]), split))),
    jax.random.wrap_key_data(put(key_bits("dropout"), split)),
    jax.random.wrap_key_data(put(key_bits("data"), split)),
    checked[0][2], checked[0][3], fresh,
  )  # fmt: skip


def train_and_evaluate_seeds(
  config: Config,
  seeds: Sequence[int],
  workdir: str,
  data: Dataset,
  *,
  resume: bool = False,
  overwrite: bool = False,
  chunk_steps: int = 200,
  progress: bool = True,
  plots: bool = True,
  devices=None,
  stdout: TextIO | None = None,
) -> dict[str, Any]:
  """Trains one model per seed in one jitted program, then evaluates each.

  Args:
    config: the shared config (its `seed` is replaced by each of `seeds`).
    seeds: distinct seeds, at least one.
    workdir: see the module docstring for what goes where.
    data: the dataset.
    resume, overwrite, chunk_steps, progress, plots, stdout: as for
      `siamese_jax.train_and_evaluate`.
    devices: the devices to spread the seeds over (all if None).

  Returns:
    The contents of summary.json.
  """
  if len(seeds) == 0 or len(set(seeds)) != len(seeds):
    raise ConfigError(f"--seeds must list distinct seeds, got {list(seeds)}.")
  t_start = time.perf_counter()
  out = stdout or sys.stdout
  workdir = os.fspath(workdir)
  sd = place_seeds(config, seeds, data, devices)
  for c in sd.configs:
    prepare_workdir(seed_dir(workdir, c.seed), c, resume=resume, overwrite=overwrite)
  if overwrite:
    for f in (checkpoint.CHECKPOINT_NAME, SUMMARY_NAME):
      if os.path.exists(os.path.join(workdir, f)):
        os.unlink(os.path.join(workdir, f))
  states, epoch, step, partial = _start(config, sd, workdir, resume=resume, out=out)
  print(
    f"{len(seeds)} seeds ({','.join(map(str, seeds))}) in one program on "
    f"{sd.mesh.devices.size} device(s)",
    file=out,
    flush=True,
  )
  states = _train_epochs(
    config, sd, workdir, states, epoch, step, partial, chunk_steps, progress, out
  )
  return _finish(config, sd, workdir, states, data, plots=plots, out=out, t_start=t_start)


def _start(config, sd: SeedsData, workdir, *, resume, out):
  """The stacked starting states, fresh or from the root checkpoint."""
  states = stack(
    [create_train_state(c[0].init, cfg) for c, cfg in zip(sd.checked, sd.configs, strict=True)]
  )
  states = jax.device_put(states, NamedSharding(sd.mesh, PartitionSpec(AXIS)))
  epoch, step, partial = 1, 0, {}
  key_bits = np.asarray(jax.random.key_data(sd.data_keys))
  if resume and checkpoint.exists(workdir):
    ckpt = checkpoint.load(workdir, jax.device_get(states))
    if not np.array_equal(ckpt.data_key, key_bits):
      raise WorkdirError(
        f"The checkpoint in {workdir!r} belongs to other seeds or another config. Start "
        "over with --overwrite."
      )
    states = jax.device_put(ckpt.state, NamedSharding(sd.mesh, PartitionSpec(AXIS)))
    epoch, step, partial = ckpt.epoch + 1, ckpt.step_in_epoch, ckpt.partial_metrics
    print(f"Resuming {workdir} at epoch {epoch}, step {step} of {sd.steps}.", file=out, flush=True)
  for c in sd.configs:
    if resume:
      truncate_metrics(os.path.join(seed_dir(workdir, c.seed), METRICS_NAME), epoch - 1)
  return states, epoch, step, partial


def _save(config, sd, workdir, states, epoch, step, metrics) -> str:
  key_bits = np.asarray(jax.random.key_data(sd.data_keys))
  ckpt = checkpoint.Checkpoint(states, epoch, step, metrics, key_bits, config)
  return checkpoint.save(workdir, ckpt)


def _train_epochs(config, sd, workdir, states, first, step, partial, chunk_steps, progress, out):
  """The epoch loop of all seeds; per-seed metrics lines, one console line."""
  writers = [JsonlWriter(os.path.join(seed_dir(workdir, c.seed), METRICS_NAME)) for c in sd.configs]
  chunk = functools.partial(train_chunk_seeds, shared_images=sd.shared_images)
  with _SigintFlag() as sigint:
    for epoch in range(first, config.epochs + 1):
      t0 = time.perf_counter()
      epoch_keys = jax.vmap(lambda k, e=epoch: jax.random.fold_in(k, e))(sd.data_keys)
      pairs, y = sd.pairs, sd.y
      if sd.fresh is not None:
        pairs, y = sd.fresh(jax.vmap(lambda k: jax.random.fold_in(k, 1))(epoch_keys))
      batches = jax.vmap(
        lambda k: epoch_batches(jax.random.fold_in(k, 0), sd.num_pairs, config.batch_size)
      )(epoch_keys)
      bar = ProgressBar(
        f"epoch {epoch}/{config.epochs}, {len(sd.configs)} seeds", sd.steps, enabled=progress
      )
      bad = []

      def on_chunk(done, total, host, bar=bar, bad=bad):
        bar.update(done)
        if not np.isfinite(host["loss"]).all():
          bad.append(done)
          return True
        return sigint.set

      states, m, done = train_epoch(
        states, sd.images, pairs, y, batches, sd.dropout_keys, start=step,
        chunk_steps=chunk_steps, on_chunk=on_chunk, chunk_fn=chunk,
      )  # fmt: skip
      bar.close()
      m = {k: np.concatenate([partial[k], m[k]], axis=-1) if k in partial else m[k] for k in m}
      if bad:
        seeds = [
          c.seed for c, row in zip(sd.configs, m["loss"], strict=True) if not np.isfinite(row).all()
        ]
        raise NonFiniteLossError(
          f"Training stopped: the loss of seed(s) {seeds} became non-finite in epoch {epoch}; "
          f"the last good checkpoint is kept in {workdir}. Lower --learning-rate (now "
          f"{config.learning_rate}) or check the data."
        )
      if done < sd.steps:
        path = _save(config, sd, workdir, states, epoch - 1, done, m)
        raise RunInterrupted(
          f"Interrupted at step {done}/{sd.steps} of epoch {epoch}; checkpoint saved to {path}. "
          f"Resume by running the same command with --workdir {workdir} --resume."
        )
      lines = _log_epoch(sd, states, m, epoch, time.perf_counter() - t0, writers)
      _save(config, sd, workdir, states, epoch, 0, {})
      step, partial = 0, {}
      print(_console_line(epoch, config.epochs, lines), file=out, flush=True)
  return states


def _log_epoch(sd, states, m, epoch, seconds, writers) -> list[dict]:
  """Validates each seed, writes its metrics line; returns the lines."""
  lines = []
  for i, writer in enumerate(writers):
    run = _monitor(sd, i)
    val = to_host_scalars(evaluate(unstack(states, i), *run)[0])
    scalars = {
      "train_loss": float(np.mean(m["loss"][i])),
      "train_accuracy": float(np.mean(m["accuracy"][i])),
      **{f"val_{k}": v for k, v in sorted(val.items(), reverse=True)},
      "epoch_seconds": seconds,
    }
    writer.write_scalars(epoch, scalars)
    lines.append(scalars)
  return lines


def _monitor(sd: SeedsData, i: int):
  """Seed i's per-epoch validation split (held-out images, else test) on the device."""
  sets = sd.checked[i][1]
  split = sets.val if sets.val is not None else sets.test
  key = (id(split.images), id(split.pairs), id(split.y))
  if key not in _MONITORS:
    _MONITORS[key] = jax.device_put((split.images, split.pairs, split.y))
  return _MONITORS[key]


_MONITORS: dict = {}


def _console_line(epoch: int, total: int, lines: list[dict]) -> str:
  def col(k, fmt):
    return " ".join(format(line[k], fmt) for line in lines)

  width = len(str(total))
  return (
    f"epoch {epoch:>{width}}/{total}  train_loss {col('train_loss', '.4f')}  "
    f"val_accuracy {col('val_accuracy', '.4f')}  {lines[0]['epoch_seconds']:6.2f} s"
  )


def _finish(config, sd, workdir, states, data, *, plots, out, t_start) -> dict:
  """Each seed's final evaluation and files, then summary.json."""
  _MONITORS.clear()
  all_results = []
  for i, c in enumerate(sd.configs):
    d = seed_dir(workdir, c.seed)
    state = unstack(states, i)
    run = place_data(c, *sd.checked[i][:4], parallel.data_mesh(jax.devices()[:1]))
    results = final_evaluation(jax.device_put(state), c, run, d, plots=plots)
    results["num_pairs_per_epoch"] = sd.num_pairs
    results["num_seeds_in_program"] = len(sd.configs)
    results["total_seconds"] = time.perf_counter() - t_start
    checkpoint.save(
      d,
      checkpoint.Checkpoint(
        state, c.epochs, 0, {}, np.asarray(jax.random.key_data(sd.checked[i][0].data)), c
      ),
    )
    atomic_write_json(os.path.join(d, RESULTS_NAME), results)
    all_results.append(results)
    print(f"seed {c.seed}:", file=out)
    print_results(results, out)
  summary = summarize(all_results)
  summary["seeds"] = [c.seed for c in sd.configs]
  summary["total_seconds"] = time.perf_counter() - t_start
  atomic_write_json(os.path.join(workdir, SUMMARY_NAME), summary)
  for line in headline(summary):
    print(line, file=out)
  out.flush()
  return summary


def summarize(results: Sequence[dict]) -> dict:
  """{"results": {key: {mean, std, min, max}}} over the numeric keys all results share.

  std is the sample standard deviation (ddof=1); 0 for one seed.
  """
  keys = [
    k for k, v in results[0].items()
    if isinstance(v, int | float) and not isinstance(v, bool)
    and all(isinstance(r.get(k), int | float) for r in results)
  ]  # fmt: skip
  out = {}
  for k in keys:
    xs = [float(r[k]) for r in results]
    out[k] = {
      "mean": statistics.fmean(xs),
      "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
      "min": min(xs),
      "max": max(xs),
    }
  return {"results": out, "num_seeds": len(results)}


HEADLINE = (
  ("test_accuracy", "test accuracy", 100, "%"),
  ("test_accuracy_at_threshold", "test accuracy at the chosen threshold", 100, "%"),
  ("test_roc_auc", "test ROC AUC", 1, ""),
  ("test_precision_at_1", "test P@1", 100, "%"),
  ("test_map_at_r", "test MAP@R", 100, "%"),
  ("test_unseen_accuracy", "unseen-class test accuracy", 100, "%"),
)


def headline(summary: dict) -> list[str]:
  """Lines such as `test accuracy 97.22 ± 0.20 % over 3 seeds`."""
  n, r = summary["num_seeds"], summary["results"]
  lines = []
  for key, name, scale, unit in HEADLINE:
    if key in r:
      s = r[key]
      digits = 2 if scale == 100 else 4
      lines.append(
        f"{name} {scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
        f"{' ' + unit if unit else ''} over {n} seeds"
      )
  return lines
