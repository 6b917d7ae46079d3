"""The pictures of docs/oneshot.md: a few 20-way episodes, and the map of one unseen alphabet.

The program is `siamese_jax.programs.oneshot_figures`; `siamese-jax oneshot-figures` runs the
same code.
"""

import sys

from siamese_jax.programs import run
from siamese_jax.programs.oneshot_figures import main

__all__ = ["main"]

if __name__ == "__main__":
  sys.exit(run("oneshot-figures"))
