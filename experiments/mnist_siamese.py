"""The original Keras mnist_siamese example, end to end.

    python -m experiments.mnist_siamese [--data-dir DIR] [--epochs 20] ...

Builds a Config from the flags (defaults are the original's), loads MNIST,
and calls `siamese_jax.train_and_evaluate`. Everything else is library code.
"""

import sys

from siamese_jax import cli, load_mnist, train_and_evaluate
from siamese_jax.run import RunInterrupted


def main(argv):
  parser = cli.make_parser("python -m experiments.mnist_siamese", __doc__.splitlines()[0])
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args)
  workdir = args.workdir or cli.default_workdir("mnist_siamese", config)
  data = load_mnist(args.data_dir)
  print(f"workdir: {workdir}", flush=True)
  try:
    train_and_evaluate(
      config,
      workdir,
      data,
      resume=args.resume,
      overwrite=args.overwrite,
      chunk_steps=args.chunk_steps,
      progress=not args.no_progress,
      tensorboard=args.tensorboard,
    )
  except RunInterrupted as e:
    command = cli.resume_command("experiments.mnist_siamese", argv, workdir)
    raise RunInterrupted(f"{e}\nTo resume: {command}") from None


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
