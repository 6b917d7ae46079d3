"""Score a trained run on Lake et al.'s 20 official one-shot runs.

    python -m experiments.oneshot --workdir W --runs PATH [--json OUT]

PATH is all_runs.zip or its folder (run01 on). Each test item is the
training image nearest in embedding distance, after the run's own
preprocessing. Prints each run's errors and `mean_accuracy` (also in --json).
"""

import argparse

from siamese_jax import cli, load_trained
from siamese_jax.core.errors import DataError
from siamese_jax.core.files import atomic_write_json, check_output
from siamese_jax.data.preprocess import needs_preprocessing
from siamese_jax.evaluation.oneshot import read_runs, score_runs


def main(argv):
  parser = argparse.ArgumentParser(prog=cli.prog("oneshot"), description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("--runs", required=True, help="all_runs.zip or its unzipped folder")
  parser.add_argument("--json", default=None, metavar="OUT", help="also write the scores here")
  args = parser.parse_args(argv)
  check_output(args.json, "--json")
  model = load_trained(args.workdir)
  if not needs_preprocessing(model.config):
    raise DataError(
      f"{args.workdir} is a run on {model.image_shape[0]}x{model.image_shape[1]} images it "
      "takes as they are (an MNIST-style run); Lake's runs are Omniglot's 105x105 drawings, "
      "which only a run that resizes and inverts its input can score. Train one with "
      "python -m experiments.omniglot."
    )
  runs = read_runs(args.runs)
  scores = score_runs(model, runs)
  for name, r in scores["runs"].items():
    print(f"{name}: {r['errors']:2d} errors of 20 ({100 * r['error_rate']:.0f}% error)")
  print(
    f"mean accuracy over {len(runs)} runs: {100 * scores['mean_accuracy']:.2f}% "
    f"(error {100 * scores['mean_error_rate']:.2f}%)"
  )
  if args.json:
    atomic_write_json(args.json, {"workdir": args.workdir, "runs_path": args.runs, **scores})
    print(f"scores: {args.json}")
