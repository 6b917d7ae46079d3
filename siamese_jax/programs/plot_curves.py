"""Learning curves of a run: metrics.jsonl -> `WORKDIR/curves.png` (or --out).

python -m experiments.plot_curves WORKDIR [--out PATH]
"""

import argparse
import os

from siamese_jax import cli, plots
from siamese_jax.core.files import check_output
from siamese_jax.rundir.workdir import read_config


def main(argv):
  parser = argparse.ArgumentParser(
    prog=cli.prog("plot_curves"), description=__doc__.splitlines()[0]
  )
  parser.add_argument("workdir", help="a run's workdir (holds metrics.jsonl)")
  parser.add_argument("--out", default=None, help="the PNG to write (default WORKDIR/curves.png)")
  args = parser.parse_args(argv)
  check_output(args.out, "--out")
  out = args.out or os.path.join(args.workdir, "curves.png")
  # Say what "val" was: the held-out split, or (as in the original) the test pairs.
  label = "validation"
  config_path = os.path.join(args.workdir, "config.json")
  if os.path.isfile(config_path):
    holdout = read_config(config_path).holdout
    label = (
      "validation (held-out images)" if holdout else "validation (= test pairs, as the original)"
    )
  path = plots.learning_curves(os.path.join(args.workdir, "metrics.jsonl"), out, val_label=label)
  print(f"learning curves: {path}")


# Sets no XLA flags of its own (see siamese_jax.programs.run).
PROJECT_XLA_FLAGS = False
