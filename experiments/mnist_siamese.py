"""The original Keras mnist_siamese example, end to end.

    python -m experiments.mnist_siamese [--data-dir DIR] [--epochs 20] ...

Builds a Config from the flags (defaults are the original's), loads MNIST,
and trains with `siamese_jax.train_and_evaluate`. Everything else is library
code.
"""

import sys

from siamese_jax import cli, xla_flags
from siamese_jax.configs import MNIST


def main(argv):
  parser = cli.make_parser("python -m experiments.mnist_siamese", __doc__.splitlines()[0], MNIST)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  cli.train_from_args("experiments.mnist_siamese", config, args, argv)


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
