"""One-shot learning on Omniglot: train on the background alphabets, test on unseen ones.

The program is `siamese_jax.programs.omniglot`; `siamese-jax omniglot` runs the same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.omniglot import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("omniglot"))
