"""Atomic file writes: a temporary file in the same directory, then a rename.

A reader sees the old file or the new one, never half of one. A failed
write raises `WriteError` naming the file and the fix, the temporary file
removed and the old file untouched.
"""

import json
import os
import tempfile
from typing import Any

from siamese_jax.core.errors import ConfigError, WorkdirError


class WriteError(WorkdirError):
  """A file could not be written; nothing was left half-written."""


RUN_FIX = (
  "the files already there, the last checkpoint among them, are intact. Free space on that "
  "disk (or fix its permissions), then run the same command with --resume to continue; or "
  "choose another --workdir."
)


# What to do when a program's own output (--json, --curve, --out, ...) cannot be written.
OUTPUT_FIX = (
  "no other file was changed. Free space on that disk (or fix its permissions), or choose "
  "another path."
)


def check_output(path: str | None, flag: str, *, folder: bool = False) -> None:
  """ConfigError naming flag, path and fix, before any work, for an output it could not write.

  `path` is a file, or with `folder` a directory to fill (its nearest
  existing ancestor must be a writable folder).
  """
  if path is None:
    return
  path = os.fspath(path)
  target = os.path.dirname(os.path.abspath(path))
  if folder:  # made with its parents: the nearest folder that exists must take it
    target = os.path.abspath(path)
    while not os.path.exists(target) and os.path.dirname(target) != target:
      target = os.path.dirname(target)
  if not os.path.isdir(target):
    what = "is a file, not a folder" if os.path.exists(target) else "does not exist"
    raise ConfigError(
      f"{flag} {path}: the folder {target} {what}. Create it, or choose another path; "
      "nothing was computed."
    )
  if not os.access(target, os.W_OK):
    raise ConfigError(
      f"{flag} {path}: the folder {target} is not writable. Choose another path; nothing was "
      "computed."
    )
  if not folder and os.path.isdir(path):
    raise ConfigError(f"{flag} {path} is a folder; give the path of a file in it.")


def write_error(path: str, e: OSError, fix: str = OUTPUT_FIX) -> WriteError:
  """The error for a failed write of `path`; `fix` says what to do (`RUN_FIX` for a run's files)."""
  return WriteError(
    f"Cannot write {path} ({e.strerror or e}). Nothing was left half-written: {fix}"
  )


# Files get the permissions a plain open() would give them (0666 less the
# umask), not mkstemp's 0600: a checkpoint is as readable as metrics.jsonl.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(
  path: str | os.PathLike, data: bytes, *, fix: str = OUTPUT_FIX, before_replace=None
) -> None:
  """Writes `data` to `path` by a temporary file and a rename; WriteError names it and `fix`.

  `before_replace()` runs once the temporary file is whole and synced (a
  checkpoint moves the last one aside there).
  """
  path = os.fspath(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
  except OSError as e:
    raise write_error(path, e, fix) from None
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    if before_replace is not None:
      before_replace()
    os.replace(tmp, path)
  except BaseException as e:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    if isinstance(e, OSError):
      raise write_error(path, e, fix) from None
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fix: str = OUTPUT_FIX) -> None:
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), fix=fix)
