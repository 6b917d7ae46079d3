"""Speed and memory of the default config on real MNIST.

    python -m experiments.benchmark --data-dir DIR [--json PATH] [--no-full-run] [--breakdown]

Compile time, train and validation seconds per epoch (scanned and per-step
dispatch), pairs/s, GFLOP/s against the peak, and a whole run's wall time
and peak RSS (`benchmarks/speed.py`); --breakdown builds the step up from
its matmul floor (`benchmarks/floor.py`). Prefix
XLA_FLAGS=--xla_force_host_platform_device_count=N to time N CPU devices.
"""

import argparse
import os
import sys

import jax

from benchmarks.speed import (
  format_report,
  format_seeds_report,
  full_run,
  run_benchmark,
  run_seeds_benchmark,
)
from siamese_jax import Config, cli, load_data, xla_flags
from siamese_jax.core.config import DROPOUT_RNGS
from siamese_jax.core.files import atomic_write_json, check_output
from siamese_jax.data.dataset import DATA_DIR_ENV


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m experiments.benchmark", description=__doc__.splitlines()[0]
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


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
