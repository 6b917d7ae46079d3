"""Recognize images from a gallery of enrolled examples, with "unknown" as an answer.

    python -m experiments.recognize --workdir W --gallery DIR QUERY.png [QUERY.png ...]
        [--k 1] [--threshold T | --calibrate-on DIR [--precision P]]
        [--save-index PATH] [--index-backend exact|faiss-flat|faiss-hnsw|faiss-ivf]
    python -m experiments.recognize --workdir W --index PATH QUERY.png ...

DIR holds a subfolder per class (`DIR/<class>/<image>`, as ImageFolder);
each image goes through the run's own input. Each query prints its label
and nearest distance, or "unknown" past the threshold: --threshold, else
calibrated on --calibrate-on (labelled held-out images), else --index's,
else the run's pair threshold.
"""

import argparse
import math

from siamese_jax import cli, load_trained, plots
from siamese_jax.core.errors import ConfigError
from siamese_jax.core.files import check_output
from siamese_jax.data.images import read_folder
from siamese_jax.recognition import Index, calibrate, load_index
from siamese_jax.recognition.index import BACKENDS


def main(argv):
  parser = argparse.ArgumentParser(prog=cli.prog("recognize"), description=__doc__.splitlines()[0])
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
  parser.add_argument(
    "--index-backend", choices=BACKENDS, default=None, help="with --gallery (default exact)"
  )
  args = parser.parse_args(argv)
  check_output(args.curve, "--curve")
  check_output(args.save_index, "--save-index")
  if (args.gallery is None) == (args.index is None):
    parser.error("give one of --gallery DIR (enrol a folder) and --index PATH (a saved index).")
  if args.k < 1:
    parser.error(f"--k must be >= 1, got {args.k}.")
  if args.threshold is not None and args.calibrate_on is not None:
    parser.error("--threshold and --calibrate-on both set the threshold; pass one of them.")
  if args.precision is not None and not 0 < args.precision <= 1:
    parser.error(f"--precision must lie in (0, 1], got {args.precision}.")
  if args.threshold is not None and not (math.isfinite(args.threshold) and args.threshold > 0):
    parser.error(f"--threshold must be a distance > 0, got {args.threshold}.")
  for flag, value in (("--precision", args.precision), ("--curve", args.curve)):
    if value is not None and args.calibrate_on is None:
      parser.error(f"{flag} applies to calibration; add --calibrate-on DIR (held-out images).")
  if args.index is not None and args.index_backend is not None:
    parser.error(
      "--index-backend applies when enrolling --gallery; a saved --index keeps the backend it "
      "was saved with."
    )
  model = load_trained(args.workdir)
  queries = model.embed_files(args.queries)
  if args.index is not None:
    index = load_index(args.index, model=model)
  else:
    paths, labels = read_folder(args.gallery)
    index = Index(
      model.embed_files(paths), labels, backend=args.index_backend or "exact", model=model,
      fingerprint=model.fingerprint,
    )  # fmt: skip
    print(f"enrolled {len(index)} images of {len(set(labels))} classes from {args.gallery}")
  if args.k > len(index):
    raise ConfigError(
      f"--k {args.k} is larger than the gallery, which holds {len(index)} images; use --k "
      f"{len(index)} or fewer."
    )
  if args.calibrate_on is not None:
    paths, labels = read_folder(args.calibrate_on)
    cal = calibrate(index, model.embed_files(paths), labels, target=args.precision or "f1")
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
  labels = index.classify(queries, k=args.k)
  distances, _ = index.search(queries, 1)
  print(f"threshold {index.threshold:.4f}")
  for path, label, d in zip(args.queries, labels, distances[:, 0], strict=True):
    print(f"{path}\t{label}\t{d:.4f}")
