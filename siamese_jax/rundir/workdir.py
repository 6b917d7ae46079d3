"""The run's directory: what it holds, who may use it, and when it may be reused.

A new run refuses a workdir that holds another run unless told to overwrite
it; a resumed run refuses a config that differs from the one it was started
with, naming the fields. `config.json` is written before training starts.

One process per workdir: a run holds an exclusive `flock` on `<workdir>/.lock`
for its whole life (`locked`). The OS releases it when the process ends in
any way, SIGKILL included, so nothing stale is ever left to clean up; the
file itself only records the holder's PID for the refusal message.
"""

import contextlib
import fcntl
import json
import os

from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError, WorkdirError
from siamese_jax.core.files import atomic_write_bytes, atomic_write_json
from siamese_jax.rundir import checkpoint

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
RESULTS_NAME = "results.json"
LOCK_NAME = ".lock"
RUN_FILES = (CONFIG_NAME, METRICS_NAME, RESULTS_NAME, checkpoint.CHECKPOINT_NAME, "distances.png")


@contextlib.contextmanager
def locked(workdir: str):
  """Holds the workdir's lock while the block runs (see the module docstring).

  A workdir this call created is removed again if the block fails before
  anything but the lock was written in it.

  Raises:
    WorkdirError: another process holds the lock (naming its PID), or the
      workdir cannot be created.
  """
  created = not os.path.isdir(workdir)
  path = os.path.join(workdir, LOCK_NAME)
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


def prepare_workdir(workdir: str, config: Config, *, resume: bool, overwrite: bool) -> None:
  """Creates the workdir, or checks that it may be reused, then writes config.json.

  A resumed run may grow its `epochs` (training longer); any other change
  of the config is refused.

  Raises:
    WorkdirError: unwritable, holds another run (without overwrite), or the
      run to resume has a different config (the message lists the fields).
  """
  check_reuse(resume=resume, overwrite=overwrite)
  config_path = os.path.join(workdir, CONFIG_NAME)
  has_run = any(os.path.exists(os.path.join(workdir, f)) for f in RUN_FILES)
  if resume:
    if not os.path.isfile(config_path):
      raise WorkdirError(
        f"Nothing to resume in {workdir!r}: it holds no {CONFIG_NAME}. Check "
        "--workdir, or drop --resume to start a new run."
      )
    old = read_config(config_path)
    if config.epochs < old.epochs:
      raise WorkdirError(
        f"Cannot resume {workdir!r} with --epochs {config.epochs}: the run has "
        f"{old.epochs}. --resume may extend a run to more epochs, never fewer; start "
        "a new run in another --workdir for fewer."
      )
    # Training longer is allowed: every epoch's randomness is keyed by the
    # epoch number, so a run resumed with more epochs is the run started with them.
    diff = {k: v for k, v in config.diff(old).items() if k != "epochs"}
    if old.data is None:  # written before runs recorded their data
      diff.pop("data", None)
    if diff:
      fields = ", ".join(f"{k} (run: {b!r}, now: {a!r})" for k, (a, b) in diff.items())
      raise WorkdirError(
        f"Cannot resume {workdir!r} with a different config; differing fields: "
        f"{fields}. Resume with the run's own flags (only --epochs may grow), or start "
        "a new run in another --workdir."
      )
    _check_writable(workdir)
    if config.epochs != old.epochs:
      atomic_write_json(config_path, config.to_dict())
    return
  if has_run and not overwrite:
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
  if overwrite:
    for f in RUN_FILES:
      try:
        os.unlink(os.path.join(workdir, f))
      except FileNotFoundError:
        pass
  atomic_write_json(config_path, config.to_dict())


def read_config(path: str) -> Config:
  try:
    with open(path) as f:
      return Config.from_dict(json.load(f))
  except (OSError, ValueError) as e:
    raise WorkdirError(
      f"{path} is not a readable config ({e}). Pass --overwrite to replace "
      "the run, or choose another --workdir."
    ) from None


def truncate_metrics(path: str, keep_epochs: int) -> None:
  """Keeps the metrics lines of epochs <= keep_epochs (the checkpoint's).

  Lines past the checkpoint were written before a kill and will be written
  again; a line cut short by the kill does not parse and is dropped too.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["epoch"] <= keep_epochs:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        continue
  atomic_write_bytes(path, "".join(kept).encode())
