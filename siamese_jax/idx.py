"""A dependency-light reader for the IDX files MNIST is published in.

The format (LeCun et al.): a big-endian header of two zero bytes, a type code,
the number of dimensions, then one uint32 per dimension, then the data in C
order. MNIST uses type 0x08 (unsigned byte) with 3 dimensions for images and 1
for labels. Files may be gzip-compressed (as published) or raw (as some
mirrors unpack them); the reader tells them apart by the gzip magic bytes, not
by the file name.

Every problem with a file becomes a `DataError` that names the file, so a
corrupt download never surfaces as a bare `struct.error` or a wrong shape
three modules later.
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from siamese_jax.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def _read_bytes(path: str) -> bytes:
  """Returns the (decompressed) contents of `path`."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except OSError as e:
    raise DataError(f"{path}: cannot be read ({e.strerror}).") from None
  if not raw.startswith(_GZIP_MAGIC):
    return raw
  try:
    return gzip.decompress(raw)
  except (EOFError, OSError, zlib.error) as e:
    raise DataError(
      f"{path}: corrupt or truncated gzip file ({e}). Download it again, or "
      "replace it with an intact copy of the official MNIST file."
    ) from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of an IDX file holding unsigned bytes.

  Args:
    data: the uncompressed file contents.
    name: how to name the source in error messages.

  Returns:
    A uint8 array whose shape is the one the header declares.

  Raises:
    DataError: the header is malformed or the payload has the wrong length.
  """
  fix = "Download it again, or replace it with an intact official MNIST file."
  if len(data) < 4:
    raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes). {fix}")
  zero, dtype, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype != _UBYTE or ndim == 0:
    magic = int.from_bytes(data[:4], "big")
    raise DataError(
      f"{name}: bad IDX magic number 0x{magic:08x}; expected 0x{_UBYTE:04x}0N "
      f"(unsigned bytes, N dimensions). Is this an MNIST IDX file? {fix}"
    )
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise DataError(f"{name}: IDX header truncated. {fix}")
  shape = struct.unpack(f">{ndim}I", data[4:header_len])
  expected = math.prod(shape)  # Python ints: no overflow on hostile headers.
  got = len(data) - header_len
  if got != expected:
    raise DataError(
      f"{name}: header declares shape {shape} ({expected} bytes of data) but "
      f"the file holds {got}. The file is truncated or corrupt. {fix}"
    )
  return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file, gzip-compressed or raw.

  Args:
    path: the file.

  Returns:
    A uint8 array of the declared shape, e.g. (60000, 28, 28) or (60000,).

  Raises:
    DataError: naming `path`, if it is missing, unreadable or malformed.
  """
  path = os.fspath(path)
  return parse_idx(_read_bytes(path), name=path)
