"""The DrLIM picture: the Siamese MLP trained to a 2-D embedding, plotted.

The program is `siamese_jax.programs.embedding_2d`; `siamese-jax embedding-2d` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.embedding_2d import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("embedding-2d"))
