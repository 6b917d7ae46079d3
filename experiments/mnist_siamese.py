"""The original Keras mnist_siamese example, end to end.

The program is `siamese_jax.programs.mnist_siamese`; `siamese-jax mnist-siamese` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.mnist_siamese import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("mnist-siamese"))
