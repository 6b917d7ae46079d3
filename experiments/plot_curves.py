"""Learning curves of a run: metrics.jsonl -> a PNG.

The program is `siamese_jax.programs.plot_curves`; `siamese-jax plot-curves` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.plot_curves import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("plot-curves"))
