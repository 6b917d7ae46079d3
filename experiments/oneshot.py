"""Score a trained run on Lake et al.'s 20 official one-shot runs.

The program is `siamese_jax.programs.oneshot`; `siamese-jax oneshot` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.oneshot import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("oneshot"))
