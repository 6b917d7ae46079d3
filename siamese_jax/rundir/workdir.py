"""The run's directory: what it holds, who may use it, and when it may be reused.

A new run refuses a workdir holding another run unless told to overwrite;
a resume refuses another config, naming the fields. One process per
workdir: the run holds a `flock` on `<workdir>/.lock` for its life, which
the OS releases however the process ends, so nothing stale is left.
"""

import contextlib
import fcntl
import json
import os
import shutil

from siamese_jax.core.config import SWEEPABLE, Config
from siamese_jax.core.errors import ConfigError, WorkdirError
from siamese_jax.rundir import checkpoint
from siamese_jax.rundir.checkpoint import CONFIG_NAME, METRICS_NAME, write_config

RESULTS_NAME = "results.json"
LOCK_NAME = ".lock"
RUN_FILES = (CONFIG_NAME, METRICS_NAME, RESULTS_NAME, checkpoint.CHECKPOINT_NAME, "distances.png")
# What else a run may leave: the previous checkpoint, and a K-model run's summary.
OTHER_RUN_FILES = (checkpoint.PREVIOUS_NAME, "summary.json")
SWEPT_PREFIXES = tuple(f"{field}_" for field in SWEEPABLE)  # a sweep's model dirs


@contextlib.contextmanager
def locked(workdir: str):
  """Holds the workdir's lock while the block runs; removes a workdir it created if the block fails.

  Raises WorkdirError: another process holds it (naming its PID), or the
  workdir cannot be created.
  """
  created = not os.path.isdir(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  _check_not_a_file(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(
      f"Workdir {workdir!r} is not writable ({e.strerror}). Choose another "
      "--workdir, or fix its permissions."
    ) from None
  ok = False
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirError(
        f"Workdir {workdir!r} is in use: process {holder} is running in it, and a workdir "
        "holds one run at a time. Wait for that process to finish (or stop it; its "
        "checkpoint lets --resume continue), or choose another --workdir."
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
    ok = True
  finally:
    if not ok and created and os.listdir(workdir) == [LOCK_NAME]:
      os.unlink(path)
      os.rmdir(workdir)
    os.close(fd)


def _check_not_a_file(workdir: str) -> None:
  """Refuses a workdir path that is a file, or lies under one, as what it is."""
  here = os.path.abspath(workdir)
  while here and not os.path.isdir(here):
    if os.path.exists(here):
      what = "is a file" if here == os.path.abspath(workdir) else f"lies under the file {here!r}"
      raise WorkdirError(f"Workdir {workdir!r} {what}, not a directory. Choose another --workdir.")
    parent = os.path.dirname(here)
    if parent == here:
      return
    here = parent


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write-test")
    with open(probe, "w"):
      pass
    os.unlink(probe)
  except OSError as e:
    raise WorkdirError(
      f"Workdir {workdir!r} is not writable ({e.strerror}). Choose another "
      "--workdir, or fix its permissions."
    ) from None


def check_reuse(*, resume: bool, overwrite: bool) -> None:
  """Refuses --resume with --overwrite (a ConfigError: a usage error)."""
  if resume and overwrite:
    raise ConfigError("--resume and --overwrite contradict each other; pass one of them.")


def prepare_workdir(workdir: str, config: Config, *, resume: bool, overwrite: bool) -> bool:
  """Creates the workdir or checks it may be reused; writes config.json for a new run.

  A resume may grow `epochs`; any other change is refused, and the data is
  matched by fingerprint. The run is what its checkpoint says, else its
  config.json; `--resume` where nothing started yet starts the run (one
  command for a SLURM job's start and requeues). Returns whether config.json
  must be rewritten once the checkpoint verifies. Raises WorkdirError:
  unwritable, another run, or a different config or data.
  """
  check_reuse(resume=resume, overwrite=overwrite)
  config_path = os.path.join(workdir, CONFIG_NAME)
  # What the run really is: its checkpoint's config, where it has one (config.json
  # may have been edited or deleted by hand); else config.json.
  stored = checkpoint.stored_config(workdir) if resume else None
  if resume and (stored is not None or os.path.isfile(config_path)):
    old = stored if stored is not None else read_config(config_path)
    if config.epochs < old.epochs:
      raise WorkdirError(
        f"Cannot resume {workdir!r} with --epochs {config.epochs}: the run has "
        f"{old.epochs}. --resume may extend a run to more epochs, never fewer; start "
        "a new run in another --workdir for fewer."
      )
    if config.epochs != old.epochs and old.lr_schedule != "constant":
      raise WorkdirError(
        f"Cannot resume {workdir!r} with --epochs {config.epochs}: its --lr-schedule "
        f"{old.lr_schedule} was planned over its {old.epochs} epochs, and more would change "
        "the rate of the steps it already took. Start a new run in another --workdir."
      )
    _check_same_data(workdir, config, old)
    # Training longer is allowed: every epoch's randomness is keyed by the
    # epoch number, so a run resumed with more epochs is the run started with them.
    ignored = {"epochs", "data", "data_fingerprint"}
    diff = {k: v for k, v in config.diff(old).items() if k not in ignored}
    if diff:
      fields = ", ".join(f"{k} (run: {b!r}, now: {a!r})" for k, (a, b) in diff.items())
      raise WorkdirError(
        f"Cannot resume {workdir!r} with a different config; differing fields: "
        f"{fields}. Resume with the run's own flags (only --epochs may grow), or start "
        "a new run in another --workdir."
      )
    _check_writable(workdir)
    edited = stored is not None and (
      not os.path.isfile(config_path) or _differs_from_file(config_path, stored)
    )
    return config.epochs != old.epochs or config.data != old.data or edited
  # --resume where nothing was started yet (a SLURM script's first start): a new run.
  if overwrite:
    _check_writable(workdir)
    clear_run(workdir)
  elif resume and _has_progress(workdir):
    raise WorkdirError(
      f"Cannot resume {workdir!r}: it holds a run's files but neither {CONFIG_NAME} nor a "
      "checkpoint that verifies, so nothing says what the run was. Start it again with "
      "--overwrite, or choose another --workdir."
    )
  elif _has_progress(workdir):
    what = "a run"
    if os.path.isfile(config_path):
      diff = config.diff(read_config(config_path))
      if diff:
        what = f"a run with another config (differs in {', '.join(diff)})"
    raise WorkdirError(
      f"Workdir {workdir!r} already holds {what}. Pass --resume to continue it, "
      "--overwrite to replace it, or choose another --workdir."
    )
  _check_writable(workdir)
  write_config(workdir, config)
  return False


def read_results(workdir: str) -> dict:
  """A finished run's results.json with its threshold; else WorkdirError (fix: `--resume`)."""
  path = os.path.join(workdir, RESULTS_NAME)
  fix = (
    "Run the run's own command with --resume: its training is finished, so it evaluates "
    "again and writes results.json whole."
  )
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} cannot be read ({e}): it was cut short or damaged. {fix}") from None
  threshold = results.get("threshold") if isinstance(results, dict) else None
  if not isinstance(threshold, int | float) or isinstance(threshold, bool):
    raise WorkdirError(f"{path} holds no threshold: it is not a finished run's results. {fix}")
  return results


def _differs_from_file(path: str, config: Config) -> bool:
  """Whether config.json says other than the checkpoint (edited by hand, or unreadable)."""
  try:
    return bool(read_config(path).diff(config))
  except WorkdirError:
    return True


def _has_progress(workdir: str) -> bool:
  """Whether a new run would lose anything: a config.json alone (no epoch finished) is nothing."""
  names = [f for f in RUN_FILES + OTHER_RUN_FILES if f != CONFIG_NAME]
  return any(os.path.exists(os.path.join(workdir, f)) for f in names)


def _check_same_data(workdir: str, config: Config, old: Config) -> None:
  """Refuses to resume on other data: by fingerprint where the run recorded one."""
  if old.data_fingerprint is not None and config.data_fingerprint is not None:
    if old.data_fingerprint != config.data_fingerprint:
      raise WorkdirError(
        f"Cannot resume {workdir!r} on other data: the run trained on {old.data} "
        f"({old.data_fingerprint}), but {config.data} holds {config.data_fingerprint}. "
        "Point --data-dir at the run's own data (wherever it lies now), or start a new run."
      )
  elif old.data is not None and old.data != config.data:  # runs before fingerprints
    raise WorkdirError(
      f"Cannot resume {workdir!r} with other data: the run trained on {old.data}, not "
      f"{config.data}. Point --data-dir at the run's own data, or start a new run."
    )


def holds_run(directory: str) -> bool:
  """Whether this project wrote `directory`: a config.json read as a `Config`, or our checkpoint."""
  try:
    read_config(os.path.join(directory, CONFIG_NAME))
    return True
  except WorkdirError:
    pass
  for name in (checkpoint.CHECKPOINT_NAME, checkpoint.PREVIOUS_NAME):
    try:
      with open(os.path.join(directory, name), "rb") as f:
        if checkpoint.has_header(f.read(64)):
          return True
    except OSError:
      pass
  return False


def clear_run(workdir: str) -> None:
  """Removes what runs of this project wrote in `workdir` (--overwrite), and nothing else.

  Run files and `tensorboard/` go only where `holds_run` proves a run wrote
  them; model directories (`seed_<S>/`, `<field>_<value>/`) are cleared the
  same way and removed once empty, so a user's own files stay.
  """
  if not os.path.isdir(workdir):
    return
  ours = holds_run(workdir)
  for entry in os.scandir(workdir):
    if entry.is_dir(follow_symlinks=False) and entry.name.startswith(("seed_", *SWEPT_PREFIXES)):
      clear_run(entry.path)
      with contextlib.suppress(OSError):  # not empty: the user's files stay
        os.rmdir(entry.path)
    elif ours and entry.name == "tensorboard" and entry.is_dir(follow_symlinks=False):
      shutil.rmtree(entry.path)
    elif ours and entry.name in RUN_FILES + OTHER_RUN_FILES:
      os.unlink(entry.path)


def read_config(path: str) -> Config:
  """The Config of a run's config.json; WorkdirError if unreadable or invalid."""
  try:
    with open(path) as f:
      d = json.load(f)
    if not isinstance(d, dict):
      raise ValueError(f"it holds a JSON {type(d).__name__}, not an object of config fields")
    return Config.from_dict(d)
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f"{path} is not a readable config ({e}). Pass --overwrite to replace "
      "the run, or choose another --workdir."
    ) from None
