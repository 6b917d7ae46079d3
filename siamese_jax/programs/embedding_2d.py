"""The DrLIM picture: the Siamese MLP trained to a 2-D embedding, plotted.

    python -m experiments.embedding_2d --data-dir DIR [--epochs 20] [--train-classes 0,1,2,3,4]

mnist_siamese's network with a 2-unit output and no final ReLU (it would
fold the map into a quadrant); the test images go to
`<workdir>/embedding_2d.png`, and with --train-classes the unseen classes'
to `embedding_2d_unseen.png`.
"""

import os

import numpy as np

from siamese_jax import Config, cli, load_trained, plots
from siamese_jax.core import distributed

DEFAULTS = Config(hidden_sizes=(128, 128, 2), final_relu=False)


def main(argv):
  parser = cli.make_parser(cli.prog("embedding_2d"), __doc__.splitlines()[0], DEFAULTS)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  if args.seeds is not None or args.sweep is not None:
    parser.error("--seeds and --sweep are not supported here: draw one map per run")
  if config.hidden_sizes[-1] != 2:
    parser.error(f"--hidden-sizes must end in 2 for a 2-D map, got {args.hidden_sizes}")
  workdir, data, _ = cli.train_from_args("experiments.embedding_2d", config, args, argv)
  if not distributed.is_writer():
    return  # process 0 draws the map
  images, labels, name, what = data.test_images, data.test_labels, "embedding_2d.png", "test"
  if config.train_classes is not None:
    unseen = ~np.isin(labels, config.train_classes)
    images, labels = images[unseen], labels[unseen]
    name, what = "embedding_2d_unseen.png", "unseen-class test"
  emb = load_trained(workdir).embed(images)
  classes = (
    "" if config.train_classes is None else f", trained on {len(config.train_classes)} classes"
  )
  path = plots.embedding_scatter(
    emb,
    labels,
    os.path.join(workdir, name),
    title=f"DrLIM map of {len(emb):,} {what} images ({config.epochs} epochs, seed "
    f"{config.seed}{classes})",
  )
  print(f"2-D embedding of the {what} images: {path}")
