"""Build one-shot runs in the format of Lake et al.'s all_runs, from Omniglot's evaluation alphabets.

    python -m benchmarks.lake_runs --data-dir DIR --out PATH [--runs 20] [--seed 0]

The official runs are not shipped with Omniglot's zips. These follow their
protocol and layout (PATH/run01 .. runNN, each with training/classKK.png,
test/itemMM.png and class_labels.txt), so `experiments.oneshot` reads them
as it reads the official ones: each run takes one evaluation alphabet, 20
of its characters and two drawers; the first drew the 20 training images,
the second the 20 test items, in a shuffled order. Images are written as
the 1-bit PNGs Omniglot ships. They are runs like the official ones, not
the official ones: report them as such.
"""

import argparse
import os
import sys

import jax
import numpy as np

from siamese_jax import cli
from siamese_jax.data.load import load_data
from siamese_jax.evaluation.oneshot import episodes


def write_runs(data, out: str, *, runs: int = 20, seed: int = 0) -> None:
  """Writes `runs` runs of `data`'s test split (see the module docstring) under `out`."""
  from PIL import Image

  support, query = episodes(
    jax.random.key(seed), data.test_labels, data.test_groups, data.test_drawers,
    ways=20, shots=1, count=runs,
  )  # fmt: skip
  rng = np.random.default_rng(seed)
  for r in range(runs):
    name = f"run{r + 1:02d}"
    order = rng.permutation(20)  # item m shows the character of training image order[m]
    os.makedirs(os.path.join(out, name, "training"), exist_ok=True)
    os.makedirs(os.path.join(out, name, "test"), exist_ok=True)

    def save(index, rel, name=name):
      Image.fromarray(data.test_images[index]).convert("1").save(os.path.join(out, name, rel))

    lines = []
    for k in range(20):
      save(support[r, k, 0], f"training/class{k + 1:02d}.png")
    for m, k in enumerate(order):
      save(query[r, k], f"test/item{m + 1:02d}.png")
      lines.append(f"{name}/test/item{m + 1:02d}.png {name}/training/class{k + 1:02d}.png")
    with open(os.path.join(out, name, "class_labels.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.lake_runs", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--data-dir", default=None, help="the Omniglot folder (official zips)")
  parser.add_argument("--out", required=True, help="folder to write run01 .. runNN into")
  parser.add_argument(
    "--runs", type=int, default=20, help="how many runs, 1 to 99: the names have two digits"
  )
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if not 1 <= args.runs <= 99:  # before the data: the format has room for 99
    parser.error(
      f"--runs {args.runs}: Lake's format numbers runs with two digits (run01 .. run99), "
      "and `experiments.oneshot` reads no other names; give 1 to 99."
    )
  data = load_data(args.data_dir)
  if data.test_groups is None:
    parser.error(f"{data.source} is not Omniglot: its test split has no alphabets.")
  write_runs(data, args.out, runs=args.runs, seed=args.seed)
  print(f"{args.runs} runs in Lake's format: {args.out}")


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
