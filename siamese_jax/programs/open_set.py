"""Open-set recognition on a run trained on some classes: enrol, calibrate, query.

    python -m experiments.mnist_siamese --data-dir DIR --train-classes 0,1,2,3,4,5 --workdir W
    python -m experiments.open_set --workdir W [--per-class 20] [--calibrate-n 2000] [--json OUT]

A seeded draw of the run's training split enrols `--per-class` images per
class, and `--calibrate-n` others calibrate "unknown" (best F1; no unseen
class is used before the test). Every test image is then a training class
or "unknown": it prints the known classes' accuracy, the share of unseen
images refused and the F1, with the threshold.
"""

import argparse

import numpy as np

from siamese_jax import cli, load_trained
from siamese_jax.core.errors import ConfigError
from siamese_jax.core.files import atomic_write_json, check_output
from siamese_jax.core.integers import count_arg, seed_arg
from siamese_jax.recognition import UNKNOWN, calibrate


def main(argv):
  parser = argparse.ArgumentParser(prog=cli.prog("open_set"), description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a run trained with --train-classes")
  parser.add_argument(
    "--per-class", type=count_arg(1), default=20, help="enrolled images per class"
  )
  parser.add_argument("--calibrate-n", type=count_arg(1), default=2000, help="held-out images")
  parser.add_argument("--seed", type=seed_arg, default=0, help="which images are drawn")
  parser.add_argument("--data-dir", default=None, help="the run's own data if not given")
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument(
    "--enrol-unseen",
    action="store_true",
    help="enrol (and calibrate on) the classes left out of training too, as TensorFlow "
    "Similarity's hello-world notebook does: no query is then of a class the index lacks",
  )
  args = parser.parse_args(argv)
  check_output(args.json, "--json")
  model = load_trained(args.workdir)
  known = model.config.train_classes
  if known is None:
    raise ConfigError(
      f"{args.workdir} was trained on every class: nothing is unknown. Train with "
      "--train-classes (e.g. 0,1,2,3,4,5) for an open-set test."
    )
  data = model.load_data(args.data_dir)
  if args.enrol_unseen:
    known = tuple(int(c) for c in np.unique(data.train_labels))
  rng = np.random.default_rng(args.seed)
  pool = rng.permutation(np.flatnonzero(np.isin(data.train_labels, known)))
  enrol = np.concatenate(
    [pool[data.train_labels[pool] == c][: args.per_class] for c in known]
  )  # fmt: skip
  rest = np.setdiff1d(pool, enrol)
  held = rng.permutation(rest)[: args.calibrate_n]
  index = model.index(data.train_images[enrol], data.train_labels[enrol])
  cal = calibrate(index, data.train_images[held], data.train_labels[held])
  test = model.embed(data.test_images)  # once, for the verdicts and the distances
  predicted = index.classify(test)
  y = data.test_labels
  seen = np.isin(y, known)  # of an enrolled class
  refused = predicted == UNKNOWN
  right = np.array([p == t for p, t in zip(predicted, y, strict=True)])
  # The F1 of "known and right", as calibrate counts it, on the test set.
  _, ids = index.search(test, 1)
  would_be_right = index.labels[ids[:, 0]] == y
  tp = int((right & ~refused).sum())
  fp = int((~refused & ~right).sum())
  fn = int((refused & would_be_right).sum())
  report = {
    "workdir": args.workdir,
    "enrolled_classes": list(known),
    "trained_classes": list(model.config.train_classes),
    "enrolled": len(enrol),
    "calibrated_on": len(held),
    "threshold": cal.threshold,
    "calibration_f1": cal.f1,
    "known_accuracy": float(right[seen].mean()),
    "known_refused": float(refused[seen].mean()),
    "unknown_refused": float(refused[~seen].mean()) if (~seen).any() else None,
    "test_f1": 2 * tp / max(2 * tp + fp + fn, 1),
    "test_images": int(len(y)),
  }
  print(
    f"enrolled {len(enrol)} images of classes {','.join(map(str, known))}; threshold "
    f"{cal.threshold:.4f} (F1 {cal.f1:.3f} on {len(held)} held-out training images)\n"
    f"test images of enrolled classes: {100 * report['known_accuracy']:.2f}% right, "
    f"{100 * report['known_refused']:.2f}% refused\n"
    + (
      f"test images of other classes refused: {100 * report['unknown_refused']:.2f}%\n"
      if report["unknown_refused"] is not None
      else ""
    )
    + f"test F1 of known-and-right: {report['test_f1']:.4f}"
  )
  if args.json:
    atomic_write_json(args.json, report)
