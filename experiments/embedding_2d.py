"""The DrLIM picture: the Siamese MLP trained to a 2-D embedding, plotted.

    python -m experiments.embedding_2d --data-dir DIR [--epochs 20] ...

The same shared MLP and contrastive loss as mnist_siamese, with a 2-unit
output layer and no ReLU on it (a ReLU would fold the map into one
quadrant). After training, every test image is embedded and drawn as a
point coloured by its digit: `<workdir>/embedding_2d.png`.
"""

import os
import sys

import jax
import numpy as np

from siamese_jax import (
  Config,
  checkpoint,
  cli,
  create_train_state,
  embed_images,
  plots,
)

DEFAULTS = Config(hidden_sizes=(128, 128, 2), final_relu=False)


def main(argv):
  parser = cli.make_parser("python -m experiments.embedding_2d", __doc__.splitlines()[0], DEFAULTS)
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  if config.hidden_sizes[-1] != 2:
    parser.error(f"--hidden-sizes must end in 2 for a 2-D map, got {args.hidden_sizes}")
  workdir, data, _ = cli.train_from_args("experiments.embedding_2d", config, args, argv)
  # The trained parameters are in the final checkpoint.
  state = checkpoint.load(workdir, create_train_state(jax.random.key(0), config)).state
  emb = np.asarray(embed_images(state, jax.device_put(data.test_images)))
  path = plots.embedding_scatter(
    emb,
    data.test_labels,
    os.path.join(workdir, "embedding_2d.png"),
    title=f"DrLIM map of the {len(emb):,} MNIST test images ({config.epochs} epochs, seed {config.seed})",
  )
  print(f"2-D embedding of the test set: {path}")


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
