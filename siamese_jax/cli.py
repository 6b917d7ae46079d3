"""Command-line plumbing shared by the programs: argv to a `Config`, errors to exit codes.

2: usage errors (argparse's, values out of range, a batch larger than the
data); 1: data and runtime errors, one paragraph, no traceback; 130
(Ctrl-C) and 143 (SIGTERM) after the checkpoint, with the resume command.
"""

import argparse
import dataclasses
import os
import shlex
import sys
import time
import typing
from collections.abc import Callable, Sequence
from typing import NamedTuple

from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError, SiameseJaxError
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset
from siamese_jax.data.load import TFDS_NAMES
from siamese_jax.losses import LOSSES
from siamese_jax.rundir.workdir import check_reuse
from siamese_jax.sampling import SAMPLERS, check, unused_fields
from siamese_jax.training.ensemble import plan_models


def int_list(text: str) -> tuple[int, ...]:
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


def _optional_int(text: str) -> int | None:
  if text.lower() == "none":
    return None
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


# The fields whose values are the names of a table's entries.
TABLES = {"loss": LOSSES, "sampler": SAMPLERS}


class _Given(argparse._StoreAction):
  """Stores a Config flag's value and records that the user gave it."""

  def __call__(self, parser, namespace, values, option_string=None):
    super().__call__(parser, namespace, values, option_string)
    namespace.given_fields = getattr(namespace, "given_fields", set()) | {self.dest}


class _GivenBool(argparse.BooleanOptionalAction):
  """`--flag` / `--no-flag`, recording that the user gave one."""

  def __call__(self, parser, namespace, values, option_string=None):
    super().__call__(parser, namespace, values, option_string)
    namespace.given_fields = getattr(namespace, "given_fields", set()) | {self.dest}


def _flag_kwargs(field: dataclasses.Field, default) -> dict:
  """argparse keywords for one Config field, from its type, default and metadata."""
  help_text = field.metadata["help"]
  choices = field.metadata["choices"] or (
    tuple(TABLES[field.name]) if field.name in TABLES else None
  )
  if choices is not None:  # a None default is explained by the help itself
    shown = "" if default is None else " (default %(default)s)"
    return {"choices": choices, "default": default, "help": help_text + shown, "action": _Given}
  if field.type is bool:
    return {"action": _GivenBool, "default": default, "help": help_text}
  optional = type(None) in typing.get_args(field.type)
  base = next(a for a in typing.get_args(field.type) if a is not type(None)) if optional else None
  kind = base if optional else field.type
  if typing.get_origin(kind) is tuple:
    typ = int_list
  elif kind is int:
    typ = _optional_int if optional else int
  else:
    typ = float if kind is float else str
  shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
  return {
    "type": typ,
    "default": default,
    "help": f"{help_text} (default {shown})",
    "action": _Given,
  }


def flag_fields() -> list[dataclasses.Field]:
  """The Config fields that are flags: those with help in their metadata."""
  return [f for f in dataclasses.fields(Config) if f.metadata["help"] is not None]


def make_parser(
  prog: str, description: str, defaults: Config | None = None
) -> argparse.ArgumentParser:
  """A parser with one flag per Config field (from its metadata) plus the run options."""
  defaults = defaults or Config()
  parser = argparse.ArgumentParser(prog=prog, description=description)
  group = parser.add_argument_group("config (defaults are this program's preset)")
  for field in flag_fields():
    group.add_argument(
      "--" + field.name.replace("_", "-"), **_flag_kwargs(field, getattr(defaults, field.name))
    )
  _add_run_flags(parser)
  _add_distributed_flags(parser)
  return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
  """Where the data and the outputs are, and how the run goes (not the config)."""
  run = parser.add_argument_group("run")
  run.add_argument(
    "--seeds",
    type=int_list,
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
  run.add_argument(
    "--no-progress", action="store_true", help="no progress bar, no reading progress"
  )
  run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
  run.add_argument(
    "--no-plots",
    action="store_true",
    help="write no distances.png (its drawing and matplotlib's import take seconds)",
  )


def _add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-process flags (see siamese_jax/core/distributed.py)."""
  dist = parser.add_argument_group(
    "several processes (see siamese_jax/core/distributed.py; without these, one process)"
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
  """The multi-process flags as `siamese_jax.core.distributed.Options`."""
  from siamese_jax.core import distributed

  return distributed.Options(
    coordinator=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    auto=args.distributed == "auto",
    timeout_s=args.distributed_timeout,
  )


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
  """Builds the Config, turning a validation error into a usage error (exit 2)."""
  # The fields without a flag (`data`, `data_fingerprint`) are recorded by the run.
  values = {f.name: getattr(args, f.name) for f in flag_fields()}
  try:
    config = Config(**values)
  except ConfigError as e:
    parser.error(str(e).replace("Config.", "--").replace("_", "-"))
  given = getattr(args, "given_fields", set())
  unused = unused_fields(config)
  # A preset's setting that the run the flags chose never reads (the
  # Omniglot preset's rotations, with --loss contrastive) falls back to the
  # default; a flag the user gave is refused below instead.
  defaults = Config()
  config = dataclasses.replace(
    config, **{f: getattr(defaults, f) for f in unused if f not in given}
  )
  given = sorted(given & set(unused))
  if given:  # a flag that does nothing is refused, never silently ignored
    parser.error(
      " ".join(f"--{f.replace('_', '-')} does not apply to this run: {unused[f]}." for f in given)
      + " Leave "
      + ("it" if len(given) == 1 else "them")
      + " out."
    )
  try:
    check(config)
  except ConfigError as e:
    parser.error(str(e).replace("Config.", "--").replace("_", "-"))
  if args.chunk_steps < 1:
    parser.error(f"--chunk-steps={args.chunk_steps} is invalid: it must be >= 1.")
  try:
    check_reuse(resume=args.resume, overwrite=args.overwrite)
  except ConfigError as e:
    parser.error(str(e))
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
  seeds, sweep = getattr(args, "seeds", None), getattr(args, "sweep", None)
  try:  # the rules `train_and_evaluate` applies, checked before any data is loaded
    plan_models(config, "", seeds, sweep)
  except ConfigError as e:
    message = str(e)
    if message.startswith("Config.seed="):  # a seed of --seeds the config refuses
      message = "--seeds: " + message.removeprefix("Config.")
    elif message.startswith("Config."):  # a swept value the config refuses
      message = "--sweep " + message.removeprefix("Config.")
    parser.error(message)
  return config


# How the running program was started, when not as `python -m MODULE`: the
# console script sets ["siamese-jax", NAME] (`siamese_jax.programs.run`).
LAUNCHER: list[str] | None = None


def prog(name: str) -> str:
  """A program's name in its usage line: as the user started it."""
  return " ".join(LAUNCHER) if LAUNCHER else f"python -m experiments.{name}"


def resume_command(module: str, argv: Sequence[str], workdir: str) -> str:
  """The command line that resumes a run started with `argv`."""
  args = [a for a in argv if a not in ("--overwrite", "--resume")]
  if not any(a == "--workdir" or a.startswith("--workdir=") for a in args):
    args += ["--workdir", workdir]
  return shlex.join([*(LAUNCHER or ["python", "-m", module]), *args, "--resume"])


def default_workdir(name: str, config: Config, seeds=None) -> str:
  tag = f"-seed{config.seed}" if seeds is None else "-seeds" + "_".join(map(str, seeds))
  return os.path.join("runs", name, time.strftime("%Y%m%d-%H%M%S") + tag)


class TrainedRun(NamedTuple):
  """What `train_from_args` returns."""

  workdir: str
  data: Dataset  # as loaded, before the run's preprocessing
  results: dict  # results.json (or summary.json); {} in processes other than 0


def train_from_args(
  module: str, config: Config, args: argparse.Namespace, argv: Sequence[str]
) -> TrainedRun:
  """Loads `--data-dir`'s data, trains into `--workdir`, names the resume on Ctrl-C."""
  from siamese_jax.core import distributed
  from siamese_jax.data.load import data_source, load_data
  from siamese_jax.training.loop import RunInterrupted, train_and_evaluate

  # Before any JAX computation (make_pairs' keys, the devices): a no-op
  # without the multi-process flags.
  distributed.initialize(distributed_options(args))
  workdir = args.workdir or default_workdir(module.rsplit(".", 1)[-1], config, args.seeds)
  if args.sweep is not None and args.workdir is None:
    workdir += f"-{args.sweep[0]}-sweep"
  split = getattr(args, "split", "lake")  # the Omniglot program's
  data = load_data(
    args.data_dir, tfds_name=args.tfds_name, progress=not args.no_progress, split=split
  )
  # config.json records where the data came from, for the programs that
  # read the finished run.
  config = dataclasses.replace(config, data=data_source(args.data_dir, args.tfds_name, split))
  if distributed.is_writer():
    print(f"workdir: {workdir}", flush=True)
  seeds = args.seeds
  if seeds is None and args.sweep is not None:
    seeds = [config.seed]
  try:
    results = train_and_evaluate(
      config, workdir, data, seeds=seeds, sweep=args.sweep, resume=args.resume,
      overwrite=args.overwrite, chunk_steps=args.chunk_steps, progress=not args.no_progress,
      tensorboard=args.tensorboard, plots=not args.no_plots,
    )  # fmt: skip
  except RunInterrupted as e:
    resume = resume_command(module, argv, workdir)
    raise RunInterrupted(f"{e}\nTo resume: {resume}", e.exit_code) from None
  return TrainedRun(workdir, data, results)


def _exit_if_distributed(code: int) -> None:
  """Leaves at once in a multi-process run: JAX's exit barrier would wait for lost peers."""
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
  from siamese_jax.training.loop import RunInterrupted

  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    main(argv)
  except RunInterrupted as e:
    print(f"\n{e}", file=sys.stderr)
    return e.exit_code
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
