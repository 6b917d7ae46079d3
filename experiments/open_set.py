"""Open-set recognition on a run trained on some classes: enrol, calibrate, query.

The program is `siamese_jax.programs.open_set`; `siamese-jax open-set` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.open_set import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("open-set"))
