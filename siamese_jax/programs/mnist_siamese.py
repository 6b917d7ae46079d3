"""The original Keras mnist_siamese example, end to end.

siamese-jax mnist-siamese [--data-dir DIR] [--epochs 20] ...
python -m experiments.mnist_siamese ...   (the same program, from a checkout)
"""

from siamese_jax import cli
from siamese_jax.configs import MNIST


def main(argv):
  parser = cli.make_parser(cli.prog("mnist_siamese"), __doc__.splitlines()[0], MNIST)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  cli.train_from_args("experiments.mnist_siamese", config, args, argv)
