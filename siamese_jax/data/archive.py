"""The one archive reader: files under a folder, or inside a zip, by '/'-separated relative path.

Omniglot and Lake's runs ship as zips that unzip to folders; `Archive`
reads either alike. It is the only library module that opens a `ZipFile`.
"""

import os
import zipfile
import zlib

from siamese_jax.core.errors import DataError

# The most one member may inflate to: Omniglot's PNGs and the runs' labels are
# kilobytes, so a larger member is a zip bomb (or not this data), refused
# from the zip's directory before a byte is inflated.
MAX_MEMBER_BYTES = 64 << 20


class Archive:
  """The files under folder `path`, or under `prefix` in zip `path`; DataError if neither."""

  def __init__(self, path: str, *, prefix: str = "", fix: str = "Replace it with an intact copy."):
    self.path = os.fspath(path)
    self.prefix = prefix
    self._zip = None
    if os.path.isdir(self.path):
      return
    if not os.path.isfile(self.path):
      raise DataError(f"{self.path}: no such file or folder. {fix}")
    try:
      self._zip = zipfile.ZipFile(self.path)
    except (zipfile.BadZipFile, OSError) as e:
      raise DataError(f"{self.path}: not a readable zip file ({e}). {fix}") from None
    self._stored = [n for n in self._zip.namelist() if not n.endswith("/")]
    self._stored_set = set(self._stored)

  @property
  def is_zip(self) -> bool:
    return self._zip is not None

  def stored_names(self) -> list[str]:
    """Every file's name as the zip stores it (prefix included); a folder's relative paths."""
    if self._zip is None:
      return self.names()
    return list(self._stored)

  def names(self) -> list[str]:
    """Sorted relative paths of the files under the root."""
    if self._zip is None:
      return sorted(
        os.path.relpath(os.path.join(d, f), self.path).replace(os.sep, "/")
        for d, _, fs in os.walk(self.path)
        for f in fs
      )
    n = len(self.prefix)
    return sorted(s[n:] for s in self._stored if s.startswith(self.prefix))

  def exists(self, name: str) -> bool:
    if self._zip is None:
      return os.path.isfile(os.path.join(self.path, name))
    return self.prefix + name in self._stored_set

  def read(self, name: str) -> bytes:
    """The bytes of file `name`; DataError if it cannot be read."""
    try:
      if self._zip is None:
        with open(os.path.join(self.path, name), "rb") as f:
          return f.read()
      info = self._zip.getinfo(self.prefix + name)
      if info.file_size > MAX_MEMBER_BYTES:
        raise DataError(
          f"{self.path}: {name} would inflate to {info.file_size:,} bytes, more than any file "
          f"of this data ({MAX_MEMBER_BYTES >> 20} MiB at most): a zip bomb, or not this "
          "dataset. Replace the zip with the official one."
        )
      return self._zip.read(self.prefix + name)
    except (OSError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as e:
      raise DataError(
        f"{self.path}: {name} cannot be read ({e or type(e).__name__}): the file is corrupt. "
        "Replace it with an intact copy."
      ) from None
