"""The reference to beat: the Keras example, ported to Keras 3 on JAX, timed.

The program is `siamese_jax.programs.keras_reference`; `siamese-jax keras-reference` runs the
same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.keras_reference import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("keras-reference"))
