"""`python -m siamese_jax PROGRAM [flags]`: the programs of `siamese_jax.programs`."""

import sys

from siamese_jax.programs import main

if __name__ == "__main__":
  sys.exit(main(launcher=("python", "-m", "siamese_jax")))
