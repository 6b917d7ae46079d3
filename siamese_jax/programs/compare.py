"""Compare two images with a trained run: distance, threshold, same or different.

    python -m experiments.compare --workdir W A.png B.png

The images may be any PIL reads (PNG of any mode, JPEG, BMP, ...). They go
through the run's own input: read as grayscale, then resized and inverted as
the run's config.json says (an MNIST run resizes other sizes to 28x28).
Images drawn the other way round from the run's get a warning; a missing or
unreadable file is refused with the problem and the fix (exit code 1).
"""

import argparse

from siamese_jax import cli, load_trained
from siamese_jax.losses.distances import euclidean_distance


def main(argv):
  parser = argparse.ArgumentParser(prog=cli.prog("compare"), description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("images", nargs=2, metavar="IMAGE", help="the two images to compare")
  args = parser.parse_args(argv)
  model = load_trained(args.workdir)
  e = model.embed_files(args.images)
  d = float(euclidean_distance(e[:1], e[1:])[0])
  print(f"distance  {d:.4f}")
  print(f"threshold {model.threshold:.4f}")
  print("same" if d < model.threshold else "different")
