"""Speed and memory of the default config on real MNIST.

    python -m experiments.benchmark --data-dir DIR [--json PATH] [--no-full-run] [--breakdown]

The program is `benchmarks.speed.main`: it times the checkout's `benchmarks/`,
which the wheel does not ship, so it has no `siamese-jax` name.
"""

import sys

from benchmarks.speed import main
from siamese_jax import cli, xla_flags

__all__ = ["main"]

if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
