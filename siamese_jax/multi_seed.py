"""Many seeds in one program: `train_and_evaluate_seeds(config, seeds, workdir, data)`.

K independent models train in one jitted program: their train states,
dropout keys, pairs and batches are stacked along a leading seed axis, and
the scanned epoch (`train.train_chunk`'s body) runs for all of them:
`shard_map` over the seed axis, and on each device the single-run body
itself (one model there) or its `jax.vmap` (several).
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

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  TrainState,
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


SWEEPABLE = ("learning_rate", "margin")


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def model_dir(workdir: str, config: Config, sweep_field: str | None) -> str:
  """`<workdir>/seed_<S>`, or `<workdir>/<field>_<value>/seed_<S>` in a sweep."""
  if sweep_field is None:
    return seed_dir(workdir, config.seed)
  return seed_dir(
    os.path.join(workdir, f"{sweep_field}_{getattr(config, sweep_field):g}"), config.seed
  )


class SweepTrainState(TrainState):
  """A TrainState whose margin is a traced leaf, so each model has its own.

  With a learning-rate sweep, `tx` is `optax.inject_hyperparams(rmsprop)`
  with only the learning rate injected: it lives in the optimizer state, a
  leaf per model, and the update is bitwise that of plain `rmsprop`.
  """

  margin: jax.Array = flax.struct.field(pytree_node=True, default=1.0)


def sweep_optimizer(config: Config) -> optax.GradientTransformation:
  static = ("decay", "eps", "initial_scale", "centered", "momentum", "nesterov", "bias_correction")
  return optax.inject_hyperparams(optax.rmsprop, static_args=static)(
    learning_rate=config.learning_rate, decay=config.rmsprop_decay, eps=config.rmsprop_eps
  )


def to_sweep_state(state: TrainState, config: Config, tx) -> SweepTrainState:
  """A single-run state as a model of a sweep: its lr and margin become leaves."""
  opt_state = tx.init(state.params)
  opt_state = opt_state._replace(
    hyperparams={"learning_rate": jnp.asarray(config.learning_rate, jnp.float32)}
  )
  return SweepTrainState(
    step=state.step, apply_fn=state.apply_fn, params=state.params, tx=tx,
    opt_state=opt_state, margin=jnp.asarray(config.margin, jnp.float32),
    threshold=state.threshold,
  )  # fmt: skip


def to_single_state(state, template: TrainState) -> TrainState:
  """Model i of a stacked state, as its own single run's TrainState.

  `template` is that run's initial state: its static parts (margin, the
  plain RMSProp) are the single run's.
  """
  plain = template
  opt_state = state.opt_state.inner_state if isinstance(state, SweepTrainState) else state.opt_state
  return plain.replace(step=state.step, params=state.params, opt_state=opt_state)


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


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("length", "shared_images", "mesh"))
def train_chunk_seeds(
  states, images, pairs, y, batches, start, keys, *, length, shared_images, mesh
):
  """`train.train_chunk` for K models at once, split over the seeds mesh.

  `shard_map` hands each device its K / d models. A device with one model
  runs exactly the single-run scan (`train_chunk`'s body, unbatched): on
  the 2-core CPU with 2 host devices that is 0.85 s an epoch for 2 seeds
  against 0.93 s for a vmap of size 1 per device, whose batched matmuls are
  slower. A device with several models vmaps the same body over them.
  Nothing crosses devices.

  Args:
    states: stacked TrainState, leading axis K (donated).
    images: uint8[N, H, W] shared by all seeds, or uint8[K, N, H, W]
      (with a holdout every seed trains on other images).
    pairs: int32[K, P, 2]; y: float32[K, P].
    batches: int32[K, S, B]; start: int32[]; keys: K dropout keys.
    length: steps in this chunk (static).
    shared_images: whether `images` has no seed axis (static).
    mesh: the seeds mesh (static).

  Returns:
    (states, {"loss": float32[K, length], "accuracy": float32[K, length]}).
  """

  def one(state, images, pairs, y, batches, key):
    rows = jax.lax.dynamic_slice_in_dim(batches, start, length)

    def body(state, idx):
      return _train_step(state, gather_batch(images, pairs, y, idx), key)

    return jax.lax.scan(body, state, rows)

  def local(states, images, pairs, y, batches, keys):
    if jax.tree.leaves(states)[0].shape[0] == 1:  # one model here: the single-run program
      first = functools.partial(jax.tree.map, lambda x: x[0])
      imgs = images if shared_images else images[0]
      out = one(first(states), imgs, pairs[0], y[0], batches[0], keys[0])
      return jax.tree.map(lambda x: x[None], out)
    in_axes = (0, None if shared_images else 0, 0, 0, 0, 0)
    return jax.vmap(one, in_axes=in_axes)(states, images, pairs, y, batches, keys)

  seeds = PartitionSpec(AXIS)
  image_spec = PartitionSpec() if shared_images else seeds
  # check_vma=False: `start` and shared images are replicated inputs that
  # the per-device program reads but never varies over, which is fine here.
  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(seeds, image_spec, seeds, seeds, seeds, seeds),
    out_specs=(seeds, seeds),
    check_vma=False,
  )(states, images, pairs, y, batches, keys)


@dataclasses.dataclass(frozen=True)
class SeedsData:
  """The K seeds' training data on the devices, split along the seed axis."""

  configs: list[Config]  # one per model: its own single run's config
  templates: list[TrainState]  # each model's initial state, as its single run makes it
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


def place_seeds(configs: Sequence[Config], data: Dataset, devices=None) -> SeedsData:
  """Builds each model's single-run data, checks they stack, places them.

  Raises:
    ConfigError: a fixed-pairs holdout makes the seeds' pair counts differ.
  """
  config = configs[0]
  checked = [check_data(c, data, devices=jax.devices()[:1]) for c in configs]
  counts = {c[2] for c in checked}  # pairs per epoch: fresh pairs are as many for every seed
  if len(counts) > 1:
    raise ConfigError(
      f"With --holdout {config.holdout} and fixed pairs, the seeds keep different numbers of "
      f"training pairs ({', '.join(f'{c[2]:,}' for c in checked)}), which one program cannot "
      "stack. Use --pairs fresh (as many pairs for every seed), or run the seeds one by one."
    )
  mesh = seed_mesh(len(configs), devices)
  split = NamedSharding(mesh, PartitionSpec(AXIS))
  rep = NamedSharding(mesh, PartitionSpec())
  sets = [c[1] for c in checked]
  shared = config.holdout == 0  # without a holdout every seed trains on all images

  def put(x, sharding):
    return jax.device_put(np.asarray(x), sharding)

  images = (
    put(sets[0].train.images, rep) if shared else put(stack([s.train.images for s in sets]), split)
  )

  def key_bits(name):  # each seed's named key, stacked: uint32[K, 2]
    return np.stack([jax.random.key_data(getattr(c[0], name)) for c in checked])

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

  templates = [
    create_train_state(c[0].init, cfg, image_shape=data.image_shape)
    for c, cfg in zip(checked, configs, strict=True)
  ]
  return SeedsData(
    list(configs), templates, checked, mesh, images, shared,
    *((None, None) if fresh else (put(stack([s.train.pairs for s in sets]), split), put(stack([s.train.y for s in sets]), split))),
    jax.random.wrap_key_data(put(key_bits("dropout"), split)),
    jax.random.wrap_key_data(put(key_bits("data"), split)),
    checked[0][2], checked[0][3], fresh,
  )  # fmt: skip


def model_configs(config: Config, seeds: Sequence[int], sweep=None) -> list[Config]:
  """One config per model: every seed, crossed with every swept value.

  Args:
    sweep: None, or (field, values) with field in `SWEEPABLE`.

  Raises:
    ConfigError: repeated seeds or values, an unsweepable field, or a value
      the config refuses.
  """
  if len(seeds) == 0 or len(set(seeds)) != len(seeds):
    raise ConfigError(f"--seeds must list distinct seeds, got {list(seeds)}.")
  if sweep is None:
    return [dataclasses.replace(config, seed=s) for s in seeds]
  field, values = sweep
  if field not in SWEEPABLE:
    raise ConfigError(f"--sweep {field}=...: only {' and '.join(SWEEPABLE)} can be swept.")
  if len(values) == 0 or len(set(values)) != len(values):
    raise ConfigError(f"--sweep {field}= must list distinct values, got {list(values)}.")
  return [dataclasses.replace(config, seed=s, **{field: v}) for v in values for s in seeds]


def train_and_evaluate_seeds(
  config: Config,
  seeds: Sequence[int],
  workdir: str,
  data: Dataset,
  *,
  sweep: tuple[str, Sequence[float]] | None = None,
  resume: bool = False,
  overwrite: bool = False,
  chunk_steps: int = 200,
  progress: bool = True,
  plots: bool = True,
  devices=None,
  stdout: TextIO | None = None,
) -> dict[str, Any]:
  """Trains one model per seed (and swept value) in one jitted program.

  Args:
    config: the shared config (its `seed`, and the swept field, are
      replaced for each model).
    seeds: distinct seeds, at least one.
    workdir: see the module docstring for what goes where.
    data: the dataset.
    sweep: None, or (field, values): "learning_rate" or "margin", crossed
      with the seeds. The values are traced, so one compilation serves all.
    resume, overwrite, chunk_steps, progress, plots, stdout: as for
      `siamese_jax.train_and_evaluate`.
    devices: the devices to spread the models over (all if None).

  Returns:
    The contents of summary.json.
  """
  t_start = time.perf_counter()
  out = stdout or sys.stdout
  workdir = os.fspath(workdir)
  configs = model_configs(config, seeds, sweep)
  field = None if sweep is None else sweep[0]
  dirs = [model_dir(workdir, c, field) for c in configs]
  sd = place_seeds(configs, data, devices)
  for c, d in zip(configs, dirs, strict=True):
    prepare_workdir(d, c, resume=resume, overwrite=overwrite)
  if overwrite:
    for f in (checkpoint.CHECKPOINT_NAME, SUMMARY_NAME):
      if os.path.exists(os.path.join(workdir, f)):
        os.unlink(os.path.join(workdir, f))
  states, epoch, step, partial = _start(config, sd, workdir, dirs, field, resume=resume, out=out)
  what = f"{len(seeds)} seeds" + ("" if sweep is None else f" x {len(sweep[1])} values of {field}")
  print(f"{what} in one program on {sd.mesh.devices.size} device(s)", file=out, flush=True)
  states = _train_epochs(
    config, sd, workdir, dirs, states, epoch, step, partial, chunk_steps, progress, out
  )
  return _finish(config, sd, workdir, dirs, sweep, states, plots=plots, out=out, t_start=t_start)


def _start(config, sd: SeedsData, workdir, dirs, field, *, resume, out):
  """The stacked starting states, fresh or from the root checkpoint."""
  singles = [
    create_train_state(c[0].init, cfg) for c, cfg in zip(sd.checked, sd.configs, strict=True)
  ]
  if field is not None:
    tx = sweep_optimizer(sd.configs[0])  # one optimizer; each model's lr is in its state
    singles = [to_sweep_state(s, c, tx) for s, c in zip(singles, sd.configs, strict=True)]
  states = jax.device_put(stack(singles), NamedSharding(sd.mesh, PartitionSpec(AXIS)))
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
  if resume:
    for d in dirs:
      truncate_metrics(os.path.join(d, METRICS_NAME), epoch - 1)
  return states, epoch, step, partial


def _save(config, sd, workdir, states, epoch, step, metrics) -> str:
  key_bits = np.asarray(jax.random.key_data(sd.data_keys))
  ckpt = checkpoint.Checkpoint(states, epoch, step, metrics, key_bits, config)
  return checkpoint.save(workdir, ckpt)


def _train_epochs(
  config, sd, workdir, dirs, states, first, step, partial, chunk_steps, progress, out
):
  """The epoch loop of all models; per-model metrics lines, one console line."""
  writers = [JsonlWriter(os.path.join(d, METRICS_NAME)) for d in dirs]
  monitors = [_monitor(sd, i) for i in range(len(dirs))]  # on the device once per run
  chunk = functools.partial(train_chunk_seeds, shared_images=sd.shared_images, mesh=sd.mesh)
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
      lines = _log_epoch(sd, states, m, epoch, time.perf_counter() - t0, writers, monitors)
      _save(config, sd, workdir, states, epoch, 0, {})
      step, partial = 0, {}
      print(_console_line(epoch, config.epochs, lines), file=out, flush=True)
  return states


def _log_epoch(sd, states, m, epoch, seconds, writers, monitors) -> list[dict]:
  """Validates each seed, writes its metrics line; returns the lines."""
  lines = []
  for i, (writer, run) in enumerate(zip(writers, monitors, strict=True)):
    state = to_single_state(unstack(states, i), sd.templates[i])
    val = to_host_scalars(evaluate(state, *run)[0])
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
  return jax.device_put((split.images, split.pairs, split.y))


def _console_line(epoch: int, total: int, lines: list[dict]) -> str:
  def col(k, fmt):
    return " ".join(format(line[k], fmt) for line in lines)

  width = len(str(total))
  return (
    f"epoch {epoch:>{width}}/{total}  train_loss {col('train_loss', '.4f')}  "
    f"val_accuracy {col('val_accuracy', '.4f')}  {lines[0]['epoch_seconds']:6.2f} s"
  )


def _finish(config, sd, workdir, dirs, sweep, states, *, plots, out, t_start) -> dict:
  """Each model's final evaluation and files, then summary.json."""
  all_results = []
  for i, (c, d) in enumerate(zip(sd.configs, dirs, strict=True)):
    keys = sd.checked[i][0]
    state = to_single_state(unstack(states, i), sd.templates[i])
    run = place_data(c, *sd.checked[i][:4], parallel.data_mesh(jax.devices()[:1]))
    results = final_evaluation(jax.device_put(state), c, run, d, plots=plots)
    results["num_pairs_per_epoch"] = sd.num_pairs
    results["num_seeds_in_program"] = len(sd.configs)
    results["total_seconds"] = time.perf_counter() - t_start
    key_bits = np.asarray(jax.random.key_data(keys.data))
    checkpoint.save(d, checkpoint.Checkpoint(state, c.epochs, 0, {}, key_bits, c))
    atomic_write_json(os.path.join(d, RESULTS_NAME), results)
    all_results.append(results)
    print(f"{os.path.relpath(d, workdir)}:", file=out)
    print_results(results, out)
  if sweep is None:
    summary = summarize(all_results)
    lines = headline(summary)
  else:
    field, values = sweep
    summary = {"sweep": {"field": field, "values": list(values)}, "by_value": {}}
    lines = []
    for v in values:
      group = [r for r, c in zip(all_results, sd.configs, strict=True) if getattr(c, field) == v]
      summary["by_value"][f"{v:g}"] = summarize(group)
      lines += [f"{field} {v:g}: {line}" for line in headline(summary["by_value"][f"{v:g}"])]
  summary["seeds"] = sorted({c.seed for c in sd.configs})
  summary["total_seconds"] = time.perf_counter() - t_start
  atomic_write_json(os.path.join(workdir, SUMMARY_NAME), summary)
  for line in lines:
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
