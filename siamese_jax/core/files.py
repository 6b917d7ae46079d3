"""Atomic file writes: a temporary file in the same directory, then a rename.

A reader (or a resumed run) sees either the old file or the new one, never a
half-written one, even if the process is killed mid-write.

A write that fails (a full disk, a directory made read-only) raises
`WriteError`: one paragraph naming the file and the fix, the temporary file
removed, the previous version of the file untouched.
"""

import json
import os
import tempfile
from typing import Any

from siamese_jax.core.errors import WorkdirError


class WriteError(WorkdirError):
  """A file could not be written; nothing was left half-written."""


def write_error(path: str, e: OSError) -> WriteError:
  return WriteError(
    f"Cannot write {path} ({e.strerror or e}). Nothing was left half-written: the files "
    "already there, the last checkpoint among them, are intact. Free space on that disk "
    "(or fix its permissions), then run the same command with --resume to continue; or "
    "choose another --workdir."
  )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  path = os.fspath(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
  except OSError as e:
    raise write_error(path, e) from None
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    if isinstance(e, OSError):
      raise write_error(path, e) from None
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
