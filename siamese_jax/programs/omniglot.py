"""One-shot learning on Omniglot: train on the background alphabets, test on unseen ones.

    siamese-jax omniglot --data-dir DIR --workdir W [--seeds 0,1,2] ...
    python -m experiments.omniglot ...   (the same program, from a checkout)

DIR holds Omniglot's images_background and images_evaluation, as the
official folders or zips. The defaults (`siamese_jax.configs.OMNIGLOT`) are
this project's choice, made on held-out background alphabets alone
(docs/losses.md, docs/oneshot.md): 28x28 ink-bright images, the `conv4`
encoder, the supervised contrastive loss on P x K = 32 x 4 batches with
every character's rotations as classes, Adam, 8 epochs, and 5 background
alphabets held out to validate on. Every other run flag works as for
mnist-siamese.
At the end the run reports 20-way 1-shot, 5-way 1-shot and 20-way 5-shot
accuracy within the evaluation alphabets, over 1,000 episodes each; score
it on Lake et al.'s official runs with experiments.oneshot.
"""

from siamese_jax import cli
from siamese_jax.configs import OMNIGLOT


def main(argv):
  parser = cli.make_parser(cli.prog("omniglot"), __doc__.splitlines()[0], OMNIGLOT)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  cli.train_from_args("experiments.omniglot", config, args, argv)
