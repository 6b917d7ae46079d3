"""One-shot learning on Omniglot: train on the background alphabets, test on unseen ones.

    python -m experiments.omniglot --data-dir DIR --workdir W [--seeds 0,1,2] ...

DIR holds Omniglot's images_background and images_evaluation, as the
official folders or zips. The defaults (`siamese_jax.configs.OMNIGLOT`) are this project's
measured choice (docs/oneshot.md): 28x28 ink-bright images, the `conv4`
encoder, fresh pairs with half the negatives from the anchor's alphabet,
Koch et al.'s affine distortions, and 5 background alphabets held out to
validate on. Every other run flag works as for experiments.mnist_siamese.
At the end the run reports 20-way 1-shot, 5-way 1-shot and 20-way 5-shot
accuracy within the evaluation alphabets, over 1,000 episodes each; score
it on Lake et al.'s official runs with experiments.oneshot.
"""

import sys

from siamese_jax import cli, xla_flags
from siamese_jax.configs import OMNIGLOT


def main(argv):
  parser = cli.make_parser("python -m experiments.omniglot", __doc__.splitlines()[0], OMNIGLOT)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  cli.train_from_args("experiments.omniglot", config, args, argv)


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
