"""Compare two images with a trained run: distance, threshold, same or different.

The program is `siamese_jax.programs.compare`; `siamese-jax compare` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.compare import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("compare"))
