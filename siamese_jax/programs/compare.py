"""Compare two images with a trained run: distance, threshold, same or different.

    python -m experiments.compare --workdir W A.png B.png

Any image PIL reads goes through the run's own input (grey, then resized
and inverted as config.json says); a bad file gets the problem and the fix.
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
