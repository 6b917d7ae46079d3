"""Recognize images from a gallery of enrolled examples, with "unknown" as an answer.

    python -m experiments.recognize --workdir W --gallery DIR QUERY.png [QUERY.png ...]
        [--k 1] [--threshold T | --calibrate-on DIR [--precision P]]
        [--save-index PATH] [--index-backend exact|faiss-flat|faiss-hnsw|faiss-ivf]
    python -m experiments.recognize --workdir W --index PATH QUERY.png ...

DIR holds one subfolder of PNGs per class (`DIR/<class>/<image>.png`, as
torchvision's ImageFolder): every image is embedded by the run's model and
enrolled under its folder's name. Each query prints its label and the
distance to its nearest enrolled image, or "unknown" when that distance
exceeds the threshold: --threshold, else one calibrated on --calibrate-on
(labelled held-out images; classes the gallery lacks count as unknown),
else the one saved with --index, else the run's own pair threshold (two
images closer than it are "the same class").
"""

import argparse
import sys

import numpy as np

from siamese_jax import cli, load_trained, plots, xla_flags
from siamese_jax.data.images import read_folder, read_png
from siamese_jax.data.preprocess import needs_preprocessing
from siamese_jax.recognition import calibrate, load_index
from siamese_jax.recognition.index import BACKENDS


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m experiments.recognize", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("--gallery", default=None, help="folder of class subfolders of PNGs")
  parser.add_argument("--index", default=None, help="an index saved with --save-index")
  parser.add_argument("queries", nargs="+", metavar="QUERY.png")
  parser.add_argument("--k", type=int, default=1, help="neighbours that vote (default 1)")
  parser.add_argument("--threshold", type=float, default=None, help="unknown beyond it")
  parser.add_argument("--calibrate-on", default=None, metavar="DIR", help="held-out folder")
  parser.add_argument(
    "--precision", type=float, default=None, help="calibrate for this precision, not best F1"
  )
  parser.add_argument("--save-index", default=None, metavar="PATH")
  parser.add_argument(
    "--curve", default=None, metavar="PNG", help="with --calibrate-on: draw the calibration curve"
  )
  parser.add_argument("--index-backend", choices=BACKENDS, default="exact")
  args = parser.parse_args(argv)
  if (args.gallery is None) == (args.index is None):
    parser.error("give one of --gallery DIR (enrol a folder) and --index PATH (a saved index).")
  if args.k < 1:
    parser.error(f"--k must be >= 1, got {args.k}.")
  if args.threshold is not None and args.calibrate_on is not None:
    parser.error("--threshold and --calibrate-on both set the threshold; pass one of them.")
  if args.precision is not None and not 0 < args.precision <= 1:
    parser.error(f"--precision must lie in (0, 1], got {args.precision}.")
  model = load_trained(args.workdir)
  any_size = needs_preprocessing(model.config)  # the run resizes and recolours its input
  queries = [read_png(p, model.image_shape, any_size=any_size) for p in args.queries]
  if args.index is not None:
    index = load_index(args.index, model=model)
  else:
    images, labels = read_folder(args.gallery, model.image_shape, any_size=any_size)
    index = model.index(images, labels, backend=args.index_backend)
    print(f"enrolled {len(index)} images of {len(set(labels))} classes from {args.gallery}")
  if args.calibrate_on is not None:
    images, labels = read_folder(args.calibrate_on, model.image_shape, any_size=any_size)
    cal = calibrate(index, images, labels, target=args.precision or "f1")
    print(
      f"calibrated on {len(labels)} images: threshold {cal.threshold:.4f}, precision "
      f"{cal.precision:.3f}, recall {cal.recall:.3f}, F1 {cal.f1:.3f}"
    )
    if args.curve:
      print(f"calibration curve: {plots.calibration_curve(cal, args.curve)}")
  elif args.threshold is not None:
    index.threshold = args.threshold
  elif index.threshold is None:
    index.threshold = model.threshold
  if args.save_index:
    index.save(args.save_index)
    print(f"index saved to {args.save_index}")
  emb = model.embed(np.stack(queries))
  labels = index.classify(emb, k=min(args.k, len(index)))
  distances, _ = index.search(emb, 1)
  print(f"threshold {index.threshold:.4f}")
  for path, label, d in zip(args.queries, labels, distances[:, 0], strict=True):
    print(f"{path}\t{label}\t{d:.4f}")


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
