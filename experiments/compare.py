"""Compare two images with a trained run: distance, threshold, same or different.

    python -m experiments.compare --workdir W A.png B.png

For an MNIST run the images are 8-bit grayscale images of the run's size
(28x28), a light digit on a dark background as in MNIST. A run that resizes
and recolours its input (Omniglot's) takes 1-bit or 8-bit grayscale images
of any size, such as Omniglot's own PNGs, and applies its preprocessing.
Anything else is refused with the problem and the fix (exit code 1).
"""

import argparse
import sys

from siamese_jax import cli, load_trained, xla_flags
from siamese_jax.data.images import read_png
from siamese_jax.data.preprocess import needs_preprocessing


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m experiments.compare", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("images", nargs=2, metavar="PNG", help="the two images to compare")
  args = parser.parse_args(argv)
  model = load_trained(args.workdir)
  any_size = needs_preprocessing(model.config)
  a, b = (read_png(p, model.image_shape, any_size=any_size)[None] for p in args.images)
  d = float(model.distance(a, b)[0])
  print(f"distance  {d:.4f}")
  print(f"threshold {model.threshold:.4f}")
  print("same" if d < model.threshold else "different")


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
