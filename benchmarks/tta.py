"""Test-time views, measured on validation only: a finished run's held-out one-shot accuracy per view set.

    python -m benchmarks.tta --workdir W [--shifts 0,0.5,1,1.5] [--turns 0,5] [--data-dir DIR]

W is a finished run that held out whole groups (Omniglot's --holdout-groups),
or a --seeds run's folder (its ensemble, `load_trained`'s). For each shift
(pixels of the run's input; `Config.tta_shift`) and each turn (degrees;
`Config.tta_turn`): 20-way and 5-way 1-shot accuracy over the run's own
1,000 validation episodes (the same episodes for every view set, so the
differences are paired), P@1 of the validation images, and the seconds to
embed them. Shift 0 and turn 0 repeat the run's recorded `val_oneshot_*`
and `val_precision_at_1`. Nothing of the test classes is computed.
"""

import argparse
import sys
import time

import jax
import numpy as np

from siamese_jax import cli, load_trained
from siamese_jax.core.streams import PairsKey
from siamese_jax.evaluation.oneshot import oneshot_metrics
from siamese_jax.evaluation.retrieval import retrieval_metrics
from siamese_jax.sampling.splits import make_pair_sets, run_keys

SETTINGS = ((20, 1), (5, 1))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.tta", description=__doc__)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--shifts", default="0,0.5,1,1.5", help="comma-separated pixels")
  parser.add_argument("--turns", default="0", help="comma-separated degrees")
  parser.add_argument("--data-dir", default=None, help="default: the run's recorded data")
  args = parser.parse_args(argv)
  try:
    shifts = [float(s) for s in args.shifts.split(",")]
    turns = [float(s) for s in args.turns.split(",")]
  except ValueError:
    parser.error(f"--shifts and --turns take comma-separated numbers, got {args.shifts!r} and "
                 f"{args.turns!r}")  # fmt: skip
  model = load_trained(args.workdir)
  # Every view set loads first, so that a refused one (a turn past 45 degrees) stops the
  # program before it reads any data or prints a row.
  models = {
    (s, t): load_trained(args.workdir, tta_shift=s, tta_turn=t) for t in turns for s in shifts
  }
  config = model.config
  data = model.load_data(args.data_dir)
  keys = run_keys(config.seed)
  sets = make_pair_sets(keys, data, config.holdout, config.train_classes, config.holdout_groups)
  val = sets.val
  if val is None or val.groups is None:
    print(f"{args.workdir}: the run held out no groups; nothing to validate on.", file=sys.stderr)
    return 2
  key = jax.random.fold_in(keys.pairs, PairsKey.VAL_EPISODES)
  print(
    f"{args.workdir}: {model.members} model(s), {len(val.images):,} validation images of "
    f"{len(np.unique(val.labels))} characters, 1,000 episodes per setting\n"
  )
  print("| shift (px) | turn (deg) | val 20-way 1-shot | val 5-way 1-shot | val P@1 | embed (s) |")
  print("| --- | --- | --- | --- | --- | --- |")
  for (shift, turn), m in models.items():
    m.embed(val.images[:64])  # compile outside the timing
    t = time.perf_counter()
    emb = m.embed(val.images)
    seconds = time.perf_counter() - t
    r = oneshot_metrics(emb, val.labels, val.groups, val.drawers, key, prefix="val_",
                        settings=SETTINGS)  # fmt: skip
    scores = [r[f"val_oneshot_{w}way_{s}shot"] for w, s in SETTINGS]
    scores.append(retrieval_metrics(emb, val.labels)["precision_at_1"])
    cells = ["n/a" if x is None else f"{100 * x:.2f}" for x in scores]  # alphabets too small
    print(f"| {shift:g} | {turn:g} | {' | '.join(cells)} | {seconds:.2f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
