"""K seeds over several processes against the same K seeds in one process.

    python -m benchmarks.processes --data-dir DIR [--seeds 0,1,2,3] [--epochs 3] [--processes 2]

Runs `experiments.mnist_siamese --seeds ...` twice on this machine, one
after the other: as one process (every device of it), then as N processes
joined by `jax.distributed` on localhost (one CPU device each), the model
axis spread over them. It prints each one's wall time (process start to the
last exit) and median training epoch (`epoch_seconds` of epochs 2 and
later: training plus validation), and their ratio. Both write their files
into temporary workdirs, removed afterwards.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from siamese_jax import cli
from siamese_jax.core.errors import SiameseJaxError
from siamese_jax.data.load import load_data


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _median_epoch(workdir: str, seed: int) -> float:
  with open(os.path.join(workdir, f"seed_{seed}", "metrics.jsonl")) as f:
    times = [json.loads(line)["epoch_seconds"] for line in f]
  return statistics.median(times[1:] or times)


def _run(commands: list[list[str]]) -> float:
  """Starts every command at once; returns the wall seconds until the last ends."""
  t = time.perf_counter()
  procs = [
    subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
  ]
  for p in procs:
    out, err = p.communicate()
    if p.returncode != 0:
      raise SiameseJaxError(f"{' '.join(p.args)} failed (exit code {p.returncode}):\n{err}")
  return time.perf_counter() - t


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.processes", description=__doc__)
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--seeds", default="0,1,2,3")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--json", default=None, help="also write the figures here")
  args = parser.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    parser.error(f"--seeds takes comma-separated integers such as 0,1,2,3, got {args.seeds!r}.")
  if args.epochs < 1 or args.processes < 2 or len(seeds) % args.processes:
    parser.error(
      f"--epochs must be >= 1 and --processes >= 2, dividing the {len(seeds)} seeds; got "
      f"--epochs {args.epochs} --processes {args.processes}."
    )
  load_data(args.data_dir, progress=False)  # a bad --data-dir: one error here, not in each child
  first = seeds[0]
  base = [
    sys.executable, "-m", "experiments.mnist_siamese", "--data-dir", args.data_dir,
    "--seeds", args.seeds, "--epochs", str(args.epochs), "--no-progress",
  ]  # fmt: skip
  with tempfile.TemporaryDirectory() as tmp:
    one_dir, many_dir = os.path.join(tmp, "one"), os.path.join(tmp, "many")
    one = _run([[*base, "--workdir", one_dir]])
    print(f"1 process: {one:.1f} s, median epoch {_median_epoch(one_dir, first):.3f} s", flush=True)
    port, n = _free_port(), args.processes
    group = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n)]
    many = _run([[*base, "--workdir", many_dir, *group, "--process-id", str(i)] for i in range(n)])
    report = {
      "seeds": args.seeds,
      "epochs": args.epochs,
      "processes": n,
      "one_process_seconds": one,
      "processes_seconds": many,
      "one_process_epoch_seconds": _median_epoch(one_dir, first),
      "processes_epoch_seconds": _median_epoch(many_dir, first),
    }
  report["ratio"] = many / one
  report["epoch_ratio"] = report["processes_epoch_seconds"] / report["one_process_epoch_seconds"]
  print(
    f"{n} processes: {many:.1f} s, median epoch {report['processes_epoch_seconds']:.3f} s\n"
    f"{n} processes / 1 process: {report['ratio']:.2f}x wall, {report['epoch_ratio']:.2f}x epoch"
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
