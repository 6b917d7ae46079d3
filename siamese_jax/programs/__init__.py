"""The command-line programs, installed with the package: one module each, with `main(argv)`.

    siamese-jax mnist-siamese --data-dir DIR        # the console script
    python -m siamese_jax mnist-siamese --data-dir DIR
    python -m experiments.mnist_siamese --data-dir DIR   # from a checkout

`experiments.benchmark` is not here: it times the checkout's `benchmarks/`.
"""

import importlib
import sys
from collections.abc import Sequence

PROGRAMS = {
  "mnist-siamese": "the original Keras mnist_siamese example, end to end",
  "omniglot": "one-shot learning on Omniglot: train on the background alphabets",
  "oneshot": "score a trained model on Lake et al.'s 20 official one-shot runs",
  "oneshot-figures": "figures of a model's one-shot episodes",
  "recognize": "build a gallery index and recognize images against it",
  "open-set": "open-set recognition: known classes or 'unknown'",
  "compare": "the distance between two images under a trained model",
  "embed": "embed images or a dataset with a trained model",
  "embedding-2d": "the 2-D DrLIM map of MNIST",
  "plot-curves": "plot a run's training curves from metrics.jsonl",
  "keras-reference": "the Keras example ported to Keras 3 on JAX, timed (needs keras)",
}


def usage() -> str:
  width = max(map(len, PROGRAMS))
  lines = [f"  {name:<{width}}  {what}" for name, what in PROGRAMS.items()]
  return (
    "usage: siamese-jax PROGRAM [flags]   (or: python -m siamese_jax PROGRAM [flags])\n\n"
    "programs:\n" + "\n".join(lines) + "\n\n`siamese-jax PROGRAM --help` lists a program's flags."
  )


def run(name: str, argv: Sequence[str] | None = None, *, launcher: Sequence[str] = ()) -> int:
  """Runs program `name` on `argv`; `launcher` is how the user started it."""
  from siamese_jax import cli, xla_flags

  module = importlib.import_module(f"siamese_jax.programs.{name.replace('-', '_')}")
  if getattr(module, "PROJECT_XLA_FLAGS", True):
    xla_flags.use_project_defaults()
  cli.LAUNCHER, before = (list(launcher) or None), cli.LAUNCHER
  try:
    return cli.run_main(module.main, argv)
  finally:
    cli.LAUNCHER = before


def main(argv: Sequence[str] | None = None, *, launcher: Sequence[str] = ("siamese-jax",)) -> int:
  """`siamese-jax PROGRAM [flags]`: the console script (and `python -m siamese_jax`)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(usage())
    return 0 if argv else 2
  name, rest = argv[0], argv[1:]
  if name not in PROGRAMS:
    print(f"siamese-jax: unknown program {name!r}.\n\n{usage()}", file=sys.stderr)
    return 2
  return run(name, rest, launcher=[*launcher, name])
