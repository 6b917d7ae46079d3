"""Embed a split, or your own images, with a trained run (for TensorBoard's projector).

The program is `siamese_jax.programs.embed`; `siamese-jax embed` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.embed import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("embed"))
