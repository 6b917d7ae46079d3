"""Command-line plumbing shared by the experiment modules.

Experiments own argv; this module only turns a given argv into a `Config`
and run options, and turns the library's expected errors into exit codes:

* 2: usage errors (unknown flags, non-numeric or out-of-range values, a
  batch size larger than the data), with the usage message where argparse
  catches them;
* 1: data and runtime errors (missing or corrupt files, unusable workdir,
  non-finite loss), as one paragraph on stderr without a traceback;
* 130: stopped by Ctrl-C after saving a checkpoint.
"""

import argparse
import dataclasses
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence

from siamese_jax.config import (
  AUGMENTS,
  DROPOUT_RNGS,
  ENCODERS,
  NEGATIVES,
  OPTIMIZERS,
  PAIR_MODES,
  RESIZE_FILTERS,
  Config,
)
from siamese_jax.data import TFDS_NAMES
from siamese_jax.dataset import DATA_DIR_ENV
from siamese_jax.errors import ConfigError, SiameseJaxError


def _int_list(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected comma-separated integers such as 128,128,128, got {text!r}"
    ) from None


def _sweep(text: str) -> tuple[str, tuple[float, ...]]:
  field, sep, values = text.partition("=")
  try:
    if not sep:
      raise ValueError
    return field.replace("-", "_"), tuple(float(v) for v in values.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected FIELD=v1,v2,... such as margin=0.5,1,2, got {text!r}"
    ) from None


# Config field -> (flag type, help). Flags are the field names with dashes.
_CONFIG_FLAGS = {
  "seed": (int, "root PRNG seed"),
  "epochs": (int, "passes over the training pairs"),
  "batch_size": (int, "pairs per step"),
  "learning_rate": (float, "the optimizer's learning rate"),
  "rmsprop_decay": (float, "RMSProp decay (Keras' rho)"),
  "rmsprop_eps": (float, "RMSProp epsilon"),
  "margin": (float, "contrastive-loss margin"),
  "dropout": (float, "dropout rate"),
  "hidden_sizes": (_int_list, "comma-separated layer widths"),
  "threshold": (float, "distance below which a pair counts as same digit"),
  "holdout": (int, "training images held out for validation and the threshold"),
  "holdout_groups": (int, "whole groups (Omniglot alphabets) held out for validation instead"),
  "augment_strength": (float, "scales the affine distortion's ranges (1: Koch et al.'s)"),
}


# Config field -> (its choices, help) and (help) of the true/false fields.
_CHOICE_FLAGS = {
  "pairs": (
    PAIR_MODES,
    "fixed: the original's pairs every epoch; fresh: new balanced pairs each epoch",
  ),
  "encoder": (ENCODERS, "the built-in encoder: mlp (the original's), cnn, or conv4 (for Omniglot)"),
  "dropout_rng": (DROPOUT_RNGS, "dropout masks from a fast counter-based hash, or JAX's threefry"),
  "optimizer": (OPTIMIZERS, "rmsprop (the original's) or adam, at --learning-rate"),
  "negatives": (
    NEGATIVES,
    "fresh pairs' negatives: from any other class, from the anchor's group (Omniglot: its "
    "alphabet), or mixed, half each",
  ),
  "augment": (AUGMENTS, "random affine distortion of every training image, on the device"),
  "resize_filter": (RESIZE_FILTERS, "the resampling filter for --image-size"),
}
_SWITCHES = {
  "invert": "use 255 - x, so dark-on-light drawings have bright ink",
  "final_relu": "ReLU on the embedding's last layer",
}


def _optional_int(text: str) -> int | None:
  if text.lower() == "none":
    return None
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def make_parser(
  prog: str, description: str, defaults: Config | None = None
) -> argparse.ArgumentParser:
  """A parser with one flag per Config field plus the run options."""
  defaults = defaults or Config()
  parser = argparse.ArgumentParser(prog=prog, description=description)
  group = parser.add_argument_group("config (defaults are the original example's)")
  for name, (typ, help_text) in _CONFIG_FLAGS.items():
    default = getattr(defaults, name)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    group.add_argument(
      "--" + name.replace("_", "-"),
      type=typ,
      default=default,
      help=f"{help_text} (default {shown})",
    )
  for name, (choices, help_text) in _CHOICE_FLAGS.items():
    group.add_argument(
      "--" + name.replace("_", "-"),
      choices=choices,
      default=getattr(defaults, name),
      help=f"{help_text} (default %(default)s)",
    )
  group.add_argument(
    "--train-classes",
    type=_int_list,
    default=defaults.train_classes,
    help="train only on these classes, e.g. 0,1,2,3,4; the test metrics are then also "
    "reported for seen and unseen classes (default: all)",
  )
  group.add_argument(
    "--image-size",
    type=_optional_int,
    default=defaults.image_size,
    help="resize images to this square size first, or none (default %(default)s)",
  )
  for name, help_text in _SWITCHES.items():
    group.add_argument(
      "--" + name.replace("_", "-"),
      action=argparse.BooleanOptionalAction,
      default=getattr(defaults, name),
      help=help_text,
    )
  _add_run_flags(parser)
  _add_distributed_flags(parser)
  return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
  """Where the data and the outputs are, and how the run goes (not the config)."""
  run = parser.add_argument_group("run")
  run.add_argument(
    "--seeds",
    type=_int_list,
    default=None,
    help="train one model per seed, e.g. 0,1,2, in one jitted program (overrides --seed); "
    "each seed's files go to <workdir>/seed_<S>/, their mean and spread to summary.json",
  )
  run.add_argument(
    "--data-dir",
    default=None,
    help=(
      "directory of the four IDX files of MNIST (or Fashion-MNIST, KMNIST, ...), a folder "
      "holding Omniglot's images_background and images_evaluation (folders or zips), or a "
      f"Keras-style .npz file (default ${DATA_DIR_ENV}, else tfds)"
    ),
  )
  run.add_argument(
    "--tfds-name",
    choices=TFDS_NAMES,
    default="mnist",
    help="the dataset tensorflow-datasets loads when no --data-dir is given (default mnist)",
  )
  run.add_argument(
    "--sweep",
    type=_sweep,
    default=None,
    metavar="FIELD=v1,v2,...",
    help="also train every value of learning_rate or margin, crossed with the seeds, in the "
    "same program; files go to <workdir>/<field>_<value>/seed_<S>/",
  )
  run.add_argument("--workdir", default=None, help="output directory (default runs/<name>/<time>)")
  run.add_argument("--resume", action="store_true", help="continue the run in --workdir")
  run.add_argument("--overwrite", action="store_true", help="replace a run already in --workdir")
  run.add_argument("--chunk-steps", type=int, default=200, help="steps per device dispatch")
  run.add_argument("--no-progress", action="store_true", help="no progress bar")
  run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")


def _add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-process flags (see siamese_jax/distributed.py)."""
  dist = parser.add_argument_group(
    "several processes (see siamese_jax/distributed.py; without these, one process)"
  )
  dist.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address")
  dist.add_argument("--num-processes", type=int, default=None, metavar="N")
  dist.add_argument("--process-id", type=int, default=None, metavar="I", help="0..N-1")
  dist.add_argument(
    "--distributed",
    choices=("auto",),
    default=None,
    help="auto: let JAX detect the cluster (SLURM, Open MPI, TPU)",
  )
  dist.add_argument(
    "--distributed-timeout",
    type=int,
    default=60,
    metavar="S",
    help="seconds to wait for the other processes to join (default %(default)s)",
  )


def distributed_options(args: argparse.Namespace):
  """The multi-process flags as `siamese_jax.distributed.Options`."""
  from siamese_jax import distributed

  return distributed.Options(
    coordinator=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    auto=args.distributed == "auto",
    timeout_s=args.distributed_timeout,
  )


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
  """Builds the Config, turning a validation error into a usage error (exit 2)."""
  # `data` is not a flag: train_from_args records it from --data-dir.
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if f.name != "data"}
  try:
    config = Config(**values)
  except ConfigError as e:
    parser.error(str(e).replace("Config.", "--").replace("_", "-"))
  if args.chunk_steps < 1:
    parser.error(f"--chunk-steps={args.chunk_steps} is invalid: it must be >= 1.")
  if args.resume and args.overwrite:
    parser.error("--resume and --overwrite contradict each other; pass one of them.")
  if hasattr(args, "coordinator"):
    try:
      dist = distributed_options(args)
      dist.validate()
    except ConfigError as e:
      parser.error(str(e))
    if dist.enabled and args.workdir is None:
      parser.error(
        "multi-process training needs --workdir: give every process the same one "
        "(process 0 writes it; a resumed run reads it in every process)."
      )
  seeds = getattr(args, "seeds", None)
  if seeds is not None and (len(set(seeds)) != len(seeds) or min(seeds) < 0):
    parser.error(f"--seeds must list distinct seeds >= 0, got {','.join(map(str, seeds))}.")
  sweep = getattr(args, "sweep", None)
  if sweep is not None:
    from siamese_jax.ensemble import SWEEPABLE

    field, values = sweep
    if field not in SWEEPABLE:
      parser.error(f"--sweep {field}=...: only {' and '.join(SWEEPABLE)} can be swept.")
    if len(set(values)) != len(values):
      parser.error(f"--sweep {field}= must list distinct values.")
    for v in values:
      try:
        dataclasses.replace(config, **{field: v})
      except ConfigError as e:
        parser.error(str(e).replace("Config.", "--sweep ").replace("_", "-"))
  return config


def resume_command(module: str, argv: Sequence[str], workdir: str) -> str:
  """The command line that resumes a run started with `argv`."""
  args = [a for a in argv if a not in ("--overwrite", "--resume")]
  if not any(a == "--workdir" or a.startswith("--workdir=") for a in args):
    args += ["--workdir", workdir]
  return shlex.join(["python", "-m", module, *args, "--resume"])


def default_workdir(name: str, config: Config, seeds=None) -> str:
  tag = f"-seed{config.seed}" if seeds is None else "-seeds" + "_".join(map(str, seeds))
  return os.path.join("runs", name, time.strftime("%Y%m%d-%H%M%S") + tag)


def train_from_args(module: str, config: Config, args: argparse.Namespace, argv: Sequence[str]):
  """The body every training experiment shares: data, workdir, run.

  Loads MNIST from `--data-dir` (or its fallbacks), trains into `--workdir`
  (default `runs/<name>/<time>-seed<seed>`), and on Ctrl-C adds the exact
  command that resumes to the error.

  Returns:
    (workdir, data, results).
  """
  from siamese_jax import distributed
  from siamese_jax.data import data_source, load_data
  from siamese_jax.run import RunInterrupted, train_and_evaluate

  # Before any JAX computation (make_pairs' keys, the devices): a no-op
  # without the multi-process flags.
  distributed.initialize(distributed_options(args))
  workdir = args.workdir or default_workdir(module.rsplit(".", 1)[-1], config, args.seeds)
  if args.sweep is not None and args.workdir is None:
    workdir += f"-{args.sweep[0]}-sweep"
  data = load_data(args.data_dir, tfds_name=args.tfds_name)
  # config.json records where the data came from, for the programs that
  # read the finished run.
  config = dataclasses.replace(config, data=data_source(args.data_dir, args.tfds_name))
  if distributed.is_writer():
    print(f"workdir: {workdir}", flush=True)
  seeds = args.seeds
  if seeds is None and args.sweep is not None:
    seeds = [config.seed]
  try:
    results = train_and_evaluate(
      config, workdir, data, seeds=seeds, sweep=args.sweep, resume=args.resume,
      overwrite=args.overwrite, chunk_steps=args.chunk_steps, progress=not args.no_progress,
      tensorboard=args.tensorboard,
    )  # fmt: skip
  except RunInterrupted as e:
    raise RunInterrupted(f"{e}\nTo resume: {resume_command(module, argv, workdir)}") from None
  return workdir, data, results


def _exit_if_distributed(code: int) -> None:
  """Leaves at once when this process belongs to a multi-process run.

  JAX's shutdown barrier at interpreter exit would otherwise wait for the
  processes that are gone, then abort from C++ (exit code 134). Every file
  the run wrote is complete (writes are atomic), so nothing is lost.
  """
  import jax

  try:
    several = jax.process_count() > 1
  except Exception:  # no backend could start: not a multi-process run
    several = False
  if several:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_main(main: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None) -> int:
  """Runs `main(argv)`, mapping expected errors to exit codes (see module doc)."""
  from siamese_jax.run import RunInterrupted

  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    main(argv)
  except RunInterrupted as e:
    print(f"\n{e}", file=sys.stderr)
    return 130
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except SiameseJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    _exit_if_distributed(1)
    return 1
  except KeyboardInterrupt:
    print("\nInterrupted.", file=sys.stderr)
    return 130
  return 0
