"""Recognize images from a gallery of enrolled examples, with "unknown" as an answer.

The program is `siamese_jax.programs.recognize`; `siamese-jax recognize` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.recognize import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("recognize"))
