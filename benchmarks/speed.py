"""Speed and memory figures for the default config on real MNIST.

`main` is `python -m experiments.benchmark`, whose flags choose among these.

`run_benchmark` measures, in one process and one run:

* compile seconds (XLA backend compiles, summed through jax.monitoring);
* the scanned epoch (`train_epoch`, the production path) and a per-step
  dispatch loop (`train_step` called once per batch), side by side;
* validation seconds per epoch (`evaluate` on the 17,820 test pairs);
* the floor, an epoch of the step's matmuls alone, and optionally the step
  built up from it one piece at a time (both in `benchmarks.floor`);
* pairs per second, achieved GFLOP/s, and the fraction of the machine's FP32
  peak (counted as below) and of a measured large-matmul ceiling;
* optionally, a whole default 20-epoch run in a subprocess: wall time from
  process start to results.json, and its peak resident memory.

How FLOPs are counted: matmul work only (2 FLOP per multiply-add); bias adds,
ReLU, dropout and the optimizer are left out (they are <1%). One image
forward is 784*128 + 128*128 + 128*128 = 133,120 multiply-adds. A training
pair is two images forward (2 x 266,240 FLOP), their weight gradients (the
same again) and the input gradients of layers 2 and 3 (2 x 2 x 32,768):
1,196,032 FLOP. Validation embeds each of the 10,000 test images once
(266,240 FLOP each) instead of both images of each of the 17,820 pairs, so
it executes 2.66 GFLOP where a per-pair forward would take 9.49 GFLOP; both
are reported. XLA's own count (`cost_analysis`) is printed as a check.

How the peak is counted: cores x clock x FP32 FLOP per cycle per core, with
the clock from /proc/cpuinfo ("cpu MHz", the nominal clock; turbo can beat
it) and FLOP/cycle = 2 FMA pipes x 2 FLOP x SIMD lanes (16 with AVX-512, 8
with AVX2). This is a nominal figure: some cores run 512-bit FMAs at half
rate, and turbo clocks exceed the nominal one. The measured ceiling, a
2048 x 2048 float32 matmul through XLA on the same cores, is the practical
bound and is reported beside it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.floor import floor_epoch_seconds, format_breakdown, step_breakdown
from siamese_jax.core import parallel
from siamese_jax.core.config import DROPOUT_RNGS, Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.core.files import atomic_write_json, check_output
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset
from siamese_jax.data.load import load_data
from siamese_jax.evaluation.pairs import evaluate
from siamese_jax.sampling.pairs import gather_batch
from siamese_jax.training import build_run, create_train_state, train_chunk, train_epoch, train_step

gather_batch_jit = jax.jit(gather_batch)


def flop_counts(config: Config, image_shape=(28, 28)) -> tuple[int, int]:
  """(FLOP of one image forward, FLOP of one training pair) of the config's MLP.

  Matmuls only, as the module docstring counts them: a pair is two images
  forward, their weight gradients (as much again), and the input gradients
  of every layer but the first.

  Raises:
    ConfigError: an encoder other than the MLP, whose work this does not count.
  """
  if config.encoder != "mlp":
    raise ConfigError(
      f"The benchmark counts the MLP's FLOPs; --encoder {config.encoder} is not counted. "
      "Use --encoder mlp."
    )
  widths = [image_shape[0] * image_shape[1], *config.hidden_sizes]
  layers = [a * b for a, b in zip(widths, widths[1:], strict=False)]
  forward = 2 * sum(layers)
  return forward, 2 * forward * 2 + 2 * 2 * sum(layers[1:])


def machine_peak_gflops() -> dict[str, Any]:
  """Nominal FP32 peak from /proc/cpuinfo (see the module docstring)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  mhz, flags = None, set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("cpu MHz") and mhz is None:
          mhz = float(line.split(":")[1])
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":")[1].split())
  except OSError:
    pass
  lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
  flop_per_cycle = 2 * 2 * lanes
  peak = cores * (mhz or 0) * 1e-3 * flop_per_cycle
  return {
    "cores": cores,
    "mhz": mhz,
    "simd": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse",
    "fp32_flop_per_cycle_per_core": flop_per_cycle,
    "peak_gflops": peak if mhz else None,
  }


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of a large float32 matmul through XLA: the practical bound."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best / 1e9


class CompileTimer:
  """Sums XLA backend compile durations while active."""

  def __init__(self):
    self.seconds = 0.0
    self.count = 0

  def __call__(self, event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
      self.seconds += duration
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)


def _median(xs):
  return statistics.median(xs) if xs else float("nan")


def full_run(data_dir: str, extra_args=()) -> dict[str, Any]:
  """A whole default run in a subprocess: wall seconds and peak RSS (MiB)."""
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, "run")
    cmd = [sys.executable, "-m", "experiments.mnist_siamese", "--data-dir", data_dir]
    cmd += ["--workdir", workdir, "--no-progress", *extra_args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      raise RuntimeError(f"full run failed ({proc.returncode}):\n{proc.stderr}")
    # ru_maxrss of waited-for children, in KiB on Linux; this is the only one.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  return {
    "wall_seconds": wall,
    "peak_rss_mib": peak_mib,
    "test_accuracy": results["test_accuracy"],
    "total_seconds_reported": results["total_seconds"],
  }


def _time_step_loop(state, split, batches_of, keys, steps, loop_epochs, log):
  """The per-step dispatch loop: the same steps, one `train_step` call each.

  The batch is gathered on the device by its own jitted call.

  Returns:
    (seconds per epoch, the state, the last epoch's batches).
  """
  batches = batches_of(0)
  state, _ = train_step(state, gather_batch_jit(*split, batches[0]), keys.dropout)
  jax.block_until_ready(state)  # compiled outside the timing
  times = []
  for e in range(loop_epochs):
    batches = batches_of(100 + e)
    batches.block_until_ready()
    t = time.perf_counter()
    metrics = []
    for i in range(steps):
      state, m = train_step(state, gather_batch_jit(*split, batches[i]), keys.dropout)
      metrics.append(m)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
    log(f"per-step loop epoch {e + 1}: train {times[-1]:.3f} s")
  return times, state, batches


def _xla_flop_per_pair(state, split, idx, key, batch_size: int) -> float:
  """XLA's own FLOP count for one step, per pair: a check of the analytic one.

  (cost_analysis does not multiply a scan's body by its trip count, so it is
  asked about one `train_step`.)
  """
  try:
    batch = gather_batch_jit(*split, idx)
    cost = train_step.lower(state, batch, key).compile().cost_analysis()
    if isinstance(cost, list):
      cost = cost[0]
    return float(cost["flops"]) / batch_size
  except Exception:  # cost_analysis is best effort across jax versions and backends.
    return float("nan")


def run_benchmark(
  data: Dataset,
  config: Config = Config(),  # noqa: B008 (frozen, so a shared default is safe)
  *,
  epochs: int = 5,
  loop_epochs: int = 2,
  chunk_steps: int = 200,
  fuse_branches: bool = True,
  donate: bool = True,
  breakdown: bool = False,
  log=print,
) -> dict[str, Any]:
  """Times the scanned epoch, the per-step loop and validation.

  Args:
    data: real MNIST.
    config: the config to time (batch size, widths).
    epochs: scanned epochs to time (the first is reported apart: it compiles).
    loop_epochs: epochs of the per-step dispatch loop to time.
    chunk_steps: steps per dispatch of the scanned epoch.
    fuse_branches: embed both images in one pass (see `Siamese`).
    donate: donate the state to the scanned chunk (False: an undonated copy
      of the same function, for comparison).
    breakdown: also time the step built up from its floor
      (`benchmarks.floor.step_breakdown`; the MLP only).
    log: progress printer.

  Returns:
    A dict of figures (see `format_report`).
  """
  # What a run builds: data and state replicated over all devices, batches split.
  setup = build_run(config, data)
  placement, run = setup.placement, setup.runs[0]
  keys, sets, mesh = run.keys, run.sets, placement.mesh

  def put(tree):
    return parallel.put_replicated(tree, mesh)

  images = placement.images
  epoch_data, _ = placement.epoch_inputs(1)  # fixed pairs: every epoch's
  pairs, y = epoch_data["pairs"], epoch_data["y"]
  test_images, test_pairs, test_y = put((sets.test.images, sets.test.pairs, sets.test.y))
  steps = run.steps
  pairs_per_epoch = steps * config.batch_size

  def batches_of(epoch):
    return placement.epoch_inputs(epoch).batches

  def initial_state():
    if fuse_branches:
      return placement.place(setup.initial)
    state = create_train_state(
      keys.init, config, fuse_branches=False, image_shape=setup.data.image_shape
    )
    return placement.place(state)

  chunk_fn = train_chunk
  if not donate:  # The same function, jitted without donating the state.
    chunk_fn = jax.jit(train_chunk.__wrapped__, static_argnames="length")

  def scanned_epoch(state, e):
    batches = placement.epoch_inputs(e + 1).batches
    batches.block_until_ready()
    t = time.perf_counter()
    state, _, _ = train_epoch(
      state,
      images,
      epoch_data,
      batches,
      keys.dropout,
      chunk_steps=chunk_steps,
      chunk_fn=chunk_fn,
    )
    jax.block_until_ready(state)
    return state, time.perf_counter() - t

  def validate(state):
    t = time.perf_counter()
    metrics, _ = evaluate(state, test_images, test_pairs, test_y)
    jax.block_until_ready(metrics)
    return time.perf_counter() - t

  state = initial_state()
  with CompileTimer() as compiles:
    state, first_train = scanned_epoch(state, 0)
    first_val = validate(state)
  log(f"first epoch (compiles included): train {first_train:.2f} s, validation {first_val:.3f} s")

  train_s, val_s = [], []
  for e in range(1, epochs):
    state, t = scanned_epoch(state, e)
    train_s.append(t)
    val_s.append(validate(state))
    log(f"scanned epoch {e}: train {t:.3f} s, validation {val_s[-1]:.4f} s")

  loop_state = initial_state()
  loop_s, loop_state, batches = _time_step_loop(
    loop_state, (images, pairs, y), batches_of, keys, steps, loop_epochs, log
  )
  xla_flop_per_pair = _xla_flop_per_pair(
    loop_state, (images, pairs, y), batches[0], keys.dropout, config.batch_size
  )

  floor_s = floor_epoch_seconds(config, steps)
  log(f"floor (the step's matmuls alone): {floor_s:.3f} s/epoch")
  rows = None
  if breakdown:
    fresh = initial_state()
    rows = step_breakdown(
      fresh, (images, pairs, y), batches, keys.dropout, config, chunk_steps=chunk_steps, log=log
    )
  measured = {
    "train_s": train_s, "val_s": val_s, "loop_s": loop_s, "floor_s": floor_s,
    "first_train": first_train, "compiles": compiles, "xla_flop_per_pair": xla_flop_per_pair,
  }  # fmt: skip
  report = _report(
    config, data, sets, mesh, pairs_per_epoch, measured, chunk_steps, fuse_branches, donate
  )
  if rows is not None:
    report["breakdown"] = rows
  return report


def _report(config, data, sets, mesh, pairs_per_epoch, m, chunk_steps, fuse_branches, donate):
  """The figures of `run_benchmark` from its measured times (see `format_report`)."""
  train_s, val_s, loop_s = m["train_s"], m["val_s"], m["loop_s"]
  floor_s, first_train, compiles = m["floor_s"], m["first_train"], m["compiles"]
  xla_flop_per_pair = m["xla_flop_per_pair"]
  train_epoch_s = _median(train_s)
  val_epoch_s = _median(val_s)
  per_image, per_pair = flop_counts(config, data.image_shape)
  train_flop = per_pair * pairs_per_epoch
  val_flop_executed = per_image * len(data.test_images)
  val_flop_per_pair = 2 * per_image * len(sets.test.pairs)
  machine = machine_peak_gflops()
  ceiling = matmul_ceiling_gflops()
  achieved = train_flop / train_epoch_s / 1e9
  return {
    "backend": jax.default_backend(),
    "num_devices": mesh.devices.size,
    "prng_impl": str(jax.config.jax_default_prng_impl),
    "dropout": config.dropout,
    "device": str(jax.devices()[0].device_kind),
    "jax_version": jax.__version__,
    "config": {"batch_size": config.batch_size, "chunk_steps": chunk_steps},
    "fuse_branches": fuse_branches,
    "donate": donate,
    "compile_seconds": compiles.seconds,
    "compiles": compiles.count,
    "first_epoch_train_seconds": first_train,
    "train_seconds_per_epoch": train_epoch_s,
    "eval_seconds_per_epoch": val_epoch_s,
    "epoch_seconds": train_epoch_s + val_epoch_s,
    "floor_seconds_per_epoch": floor_s,
    "train_over_floor": train_epoch_s / floor_s,
    "dropout_rng": config.dropout_rng,
    "loop_train_seconds_per_epoch": _median(loop_s),
    "scan_speedup_over_loop": _median(loop_s) / train_epoch_s,
    "train_pairs_per_second": pairs_per_epoch / train_epoch_s,
    "loop_train_pairs_per_second": pairs_per_epoch / _median(loop_s),
    "train_gflop_per_epoch": train_flop / 1e9,
    "flop_per_train_pair": per_pair,
    "num_val_pairs": len(sets.test.pairs),
    "xla_flop_per_train_pair": xla_flop_per_pair,
    "eval_gflop_executed": val_flop_executed / 1e9,
    "eval_gflop_per_pair_equivalent": val_flop_per_pair / 1e9,
    "train_gflops_achieved": achieved,
    "eval_gflops_achieved": val_flop_executed / val_epoch_s / 1e9,
    "machine": machine,
    "fraction_of_peak": achieved / machine["peak_gflops"] if machine["peak_gflops"] else None,
    "matmul_ceiling_gflops": ceiling,
    "fraction_of_matmul_ceiling": achieved / ceiling,
    "timed_epochs": len(train_s),
    "timed_loop_epochs": len(loop_s),
  }


def format_report(r: dict[str, Any]) -> str:
  m = r["machine"]
  peak = f"{m['peak_gflops']:.0f}" if m["peak_gflops"] else "unknown"
  frac = f"{100 * r['fraction_of_peak']:.0f}%" if r["fraction_of_peak"] else "n/a"
  lines = [
    f"backend {r['backend']} ({r['device']}) x {r['num_devices']}, jax {r['jax_version']}, "
    f"dropout {r['dropout']} ({r['dropout_rng']} masks), PRNG {r['prng_impl']}",
    f"compile: {r['compile_seconds']:.2f} s in {r['compiles']} XLA compiles",
    f"train, scanned epoch     : {r['train_seconds_per_epoch']:.3f} s/epoch "
    f"({r['train_pairs_per_second']:,.0f} pairs/s), median of {r['timed_epochs']}",
    f"train, per-step dispatch : {r['loop_train_seconds_per_epoch']:.3f} s/epoch "
    f"({r['loop_train_pairs_per_second']:,.0f} pairs/s), median of {r['timed_loop_epochs']}; "
    f"scan is {r['scan_speedup_over_loop']:.2f}x faster",
    f"floor, the step's 8 matmuls alone: {r['floor_seconds_per_epoch']:.3f} s/epoch; the "
    f"training epoch is {r['train_over_floor']:.2f}x the floor",
    f"validation ({r['num_val_pairs']:,} pairs): {r['eval_seconds_per_epoch']:.4f} s/epoch",
    f"epoch (train + validation): {r['epoch_seconds']:.3f} s",
    f"work: {r['train_gflop_per_epoch']:.1f} GFLOP/epoch training "
    f"({r['flop_per_train_pair']:,} FLOP/pair counted; XLA counts "
    f"{r['xla_flop_per_train_pair']:,.0f}), validation executes "
    f"{r['eval_gflop_executed']:.2f} GFLOP ({r['eval_gflop_per_pair_equivalent']:.2f} per-pair equivalent)",
    f"achieved: {r['train_gflops_achieved']:.0f} GFLOP/s training, "
    f"{r['eval_gflops_achieved']:.0f} GFLOP/s validation",
    f"peak: {peak} GFLOP/s nominal ({m['cores']} cores x {m['mhz']} MHz x "
    f"{m['fp32_flop_per_cycle_per_core']} FLOP/cycle, {m['simd']}); training reaches {frac}",
    f"measured 2048^3 matmul ceiling: {r['matmul_ceiling_gflops']:.0f} GFLOP/s; training "
    f"reaches {100 * r['fraction_of_matmul_ceiling']:.0f}% of it",
  ]
  if "breakdown" in r:
    lines.append(format_breakdown(r["breakdown"]))
  if "full_run" in r:
    f = r["full_run"]
    lines.append(
      f"full default run (20 epochs, subprocess): {f['wall_seconds']:.1f} s wall from process "
      f"start to results.json, peak RSS {f['peak_rss_mib']:.0f} MiB, test accuracy "
      f"{f['test_accuracy']:.4f}"
    )
  return "\n".join(lines)


def _placement_epoch(placement, state, e: int, chunk_steps: int):
  """One training epoch as the loop runs it, through a run's placement: the new state."""
  data, batches = placement.epoch_inputs(e + 1)
  return train_epoch(
    state, placement.images, data, batches, placement.dropout_keys,
    chunk_steps=chunk_steps, chunk_fn=placement.chunk_fn, fetch=placement.fetch,
  ).state  # fmt: skip


def run_seeds_benchmark(
  data: Dataset,
  config: Config,
  num_seeds: int,
  *,
  epochs: int = 4,
  chunk_steps: int = 200,
  log=print,
) -> dict[str, Any]:
  """One seed on one device against `num_seeds` seeds in one program, same run.

  The one-seed figure is the production path (`train_chunk`) on the first
  device; the K-seed figure is `placement.Stacked`'s chunk over the
  models mesh (as many devices as divide K). Both are medians of epochs 2..
  `epochs` of training (the first compiles).

  Returns:
    {"one_seed_seconds", "seeds_seconds", "num_seeds", "devices",
    "model_epochs_per_second" for both, "ratio"}: ratio is the K-seed epoch
    time over the one-seed epoch time.
  """

  def time_epochs(run_epoch, state):
    times = []
    for e in range(epochs):
      t = time.perf_counter()
      state = jax.block_until_ready(run_epoch(state, e))
      times.append(time.perf_counter() - t)
    return _median(times[1:])

  # One seed, one device: what a single run does.
  one = build_run(config, data, devices=jax.devices()[:1])
  single = time_epochs(
    lambda state, e: _placement_epoch(one.placement, state, e, chunk_steps),
    one.placement.place(one.initial),
  )
  log(f"one seed on one device: {single:.3f} s/epoch")

  # K seeds: the run's own placement of stacked models.
  many_run = build_run(config, data, seeds=list(range(num_seeds)))
  placement = many_run.placement
  many = time_epochs(
    lambda states, e: _placement_epoch(placement, states, e, chunk_steps),
    placement.place(many_run.initial),
  )
  log(f"{num_seeds} seeds in one program on {placement.devices} device(s): {many:.3f} s/epoch")
  return {
    "num_seeds": num_seeds,
    "devices": int(placement.devices),
    "device_count": len(jax.devices()),
    "one_seed_seconds": single,
    "seeds_seconds": many,
    "one_seed_model_epochs_per_second": 1 / single,
    "seeds_model_epochs_per_second": num_seeds / many,
    "ratio": many / single,
    "throughput_gain": num_seeds * single / many,
  }


def format_seeds_report(r: dict[str, Any]) -> str:
  return "\n".join(
    [
      f"one seed, one device        : {r['one_seed_seconds']:.3f} s/epoch "
      f"({r['one_seed_model_epochs_per_second']:.2f} model-epochs/s)",
      f"{r['num_seeds']} seeds, one program, {r['devices']} of {r['device_count']} device(s): "
      f"{r['seeds_seconds']:.3f} s/epoch ({r['seeds_model_epochs_per_second']:.2f} model-epochs/s)",
      f"{r['num_seeds']}-seed epoch / one-seed epoch: {r['ratio']:.2f}x; throughput "
      f"{r['throughput_gain']:.2f}x that of running the seeds one after another",
    ]
  )


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m experiments.benchmark",
    description="Speed and memory of the default config on real MNIST.",
  )
  parser.add_argument("--data-dir", default=None, help=f"MNIST IDX dir (default ${DATA_DIR_ENV})")
  parser.add_argument(
    "--epochs", type=int, default=6, help="scanned epochs to time (first compiles)"
  )
  parser.add_argument("--loop-epochs", type=int, default=2, help="per-step loop epochs to time")
  parser.add_argument("--chunk-steps", type=int, default=200, help="steps per scanned dispatch")
  parser.add_argument(
    "--no-fuse-branches", action="store_true", help="embed the two images separately"
  )
  parser.add_argument("--no-donate", action="store_true", help="do not donate the state")
  parser.add_argument(
    "--dropout", type=float, default=Config().dropout, help="dropout rate to time"
  )
  parser.add_argument(
    "--dropout-rng",
    choices=DROPOUT_RNGS,
    default=Config().dropout_rng,
    help="dropout masks from the counter-based hash or JAX's threefry (default %(default)s)",
  )
  parser.add_argument(
    "--prng-impl",
    choices=("threefry2x32", "rbg", "unsafe_rbg"),
    default=None,
    help="JAX's PRNG implementation (default: JAX's own, threefry2x32)",
  )
  parser.add_argument("--no-full-run", action="store_true", help="skip the whole 20-epoch run")
  parser.add_argument(
    "--breakdown",
    action="store_true",
    help="also time the step built up from its matmul floor, one piece at a time",
  )
  parser.add_argument(
    "--seeds",
    type=int,
    default=None,
    metavar="K",
    help="instead: time K seeds in one program against one seed on one device "
    "(model-epochs per second, same run)",
  )
  parser.add_argument("--json", default=None, help="also write the figures as JSON here")
  args = parser.parse_args(argv)
  check_output(args.json, "--json")
  if args.epochs < 2 or args.loop_epochs < 1 or args.chunk_steps < 1:
    parser.error("--epochs must be >= 2, --loop-epochs and --chunk-steps >= 1")
  try:
    config = Config(dropout=args.dropout, dropout_rng=args.dropout_rng)
  except ValueError as e:
    parser.error(str(e))
  if args.prng_impl:
    jax.config.update("jax_default_prng_impl", args.prng_impl)
  data_dir = args.data_dir or os.environ.get(DATA_DIR_ENV)
  if not args.no_full_run and not data_dir and args.seeds is None:
    # Checked before the timed work, not after it.
    parser.error("the full run needs --data-dir (or pass --no-full-run)")
  data = load_data(data_dir)
  if args.seeds is not None:
    if args.seeds < 1:
      parser.error("--seeds must be >= 1")
    report = run_seeds_benchmark(
      data, config, args.seeds, epochs=args.epochs, chunk_steps=args.chunk_steps,
      log=lambda s: print(s, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(format_seeds_report(report))
    if args.json:
      atomic_write_json(args.json, report)
    return
  report = run_benchmark(
    data,
    config,
    epochs=args.epochs,
    loop_epochs=args.loop_epochs,
    chunk_steps=args.chunk_steps,
    fuse_branches=not args.no_fuse_branches,
    donate=not args.no_donate,
    breakdown=args.breakdown,
    log=lambda s: print(s, file=sys.stderr, flush=True),
  )
  if not args.no_full_run:
    print("full default run (20 epochs) in a subprocess ...", file=sys.stderr, flush=True)
    report["full_run"] = full_run(data_dir)
  print(format_report(report))
  if args.json:
    atomic_write_json(args.json, report)
