"""IDX files, the format MNIST (and Fashion-MNIST, KMNIST) is published in.

A big-endian header (two zero bytes, a type code, the number of
dimensions, one uint32 each), then the data in C order; MNIST uses type
0x08. Gzip (as published) or raw files are told apart by magic bytes. Every
problem is a `DataError` naming the file, never a bare `struct.error`.
"""

import math
import os
import struct
import zlib

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def _check_magic(head: bytes, name: str) -> int:
  """The number of dimensions of an IDX header's first 4 bytes, checked."""
  fix = "Download it again, or replace it with an intact official MNIST file."
  if len(head) < 4:
    raise DataError(f"{name}: too short to be an IDX file ({len(head)} bytes). {fix}")
  zero, dtype, ndim = struct.unpack(">HBB", head)
  if zero != 0 or dtype != _UBYTE or ndim == 0:
    magic = int.from_bytes(head, "big")
    raise DataError(
      f"{name}: bad IDX magic number 0x{magic:08x}; expected 0x{_UBYTE:04x}0N "
      f"(unsigned bytes, N dimensions). Is this an MNIST IDX file? {fix}"
    )
  return ndim


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """A uint8 array of the header's shape from an IDX file's bytes; DataError if malformed."""
  fix = "Download it again, or replace it with an intact official MNIST file."
  ndim = _check_magic(data[:4], name)
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


# The most data one IDX file may declare: MNIST's largest holds 47 MB. A
# larger header (or a gzip that inflates past its header) is refused before
# its data is inflated into memory.
MAX_IDX_BYTES = 1 << 30


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file, gzip or raw: uint8 of the declared shape, e.g. (60000, 28, 28).

  A gzip is inflated header first, its declared size checked (at most
  `MAX_IDX_BYTES`), then exactly that many bytes; any surplus is counted a
  megabyte at a time, never held. Raises DataError naming `path`.
  """
  path = os.fspath(path)
  fix = "Download it again, or replace it with an intact official MNIST file."
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found.") from None
  except OSError as e:
    raise DataError(f"{path}: cannot be read ({e.strerror}).") from None
  if not raw.startswith(_GZIP_MAGIC):
    return parse_idx(raw, name=path)
  inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a gzip stream
  try:
    head = inflate.decompress(raw, 4)
    ndim = _check_magic(head, path)
    head += inflate.decompress(inflate.unconsumed_tail, 4 * ndim)
    if len(head) < 4 + 4 * ndim:
      raise DataError(f"{path}: IDX header truncated. {fix}")
    shape = struct.unpack(f">{ndim}I", head[4:])
    expected = math.prod(shape)
    if expected > MAX_IDX_BYTES:
      raise DataError(
        f"{path}: header declares shape {shape} ({expected:,} bytes), more than an IDX file "
        f"of this data holds ({MAX_IDX_BYTES:,} at most). {fix}"
      )
    # The header and the data in one buffer, the array starting past the
    # header, as the whole-file reader laid it out: an array at its buffer's
    # own start raised the default run's peak memory (docs/performance.md).
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflate.decompress(raw, len(head) + expected)
    got = len(data) - len(head)
    while got <= expected + MAX_IDX_BYTES and (
      chunk := inflate.decompress(inflate.unconsumed_tail, 1 << 20)
    ):
      got += len(chunk)  # counted, not kept
  except zlib.error as e:
    raise DataError(
      f"{path}: corrupt or truncated gzip file ({e}). Download it again, or "
      "replace it with an intact copy of the official MNIST file."
    ) from None
  if not inflate.eof and got <= expected:  # the stream stopped before its end
    raise DataError(
      f"{path}: corrupt or truncated gzip file (it ends before its end-of-stream marker). {fix}"
    )
  if got != expected:
    held = (
      f"{got - len(head) + len(head)}" if got <= expected + MAX_IDX_BYTES else f"more than {got:,}"
    )
    raise DataError(
      f"{path}: header declares shape {shape} ({expected} bytes of data) but "
      f"the file holds {held}. The file is truncated or corrupt. {fix}"
    )
  return np.frombuffer(data, dtype=np.uint8, offset=len(head)).reshape(shape)


# Split part -> IDX base name. The reader accepts each with or without `.gz`.
IDX_FILES = {
  "train_images": "train-images-idx3-ubyte",
  "train_labels": "train-labels-idx1-ubyte",
  "test_images": "t10k-images-idx3-ubyte",
  "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx_file(data_dir: str, base: str) -> str | None:
  for candidate in (base + ".gz", base):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def load_idx_dir(data_dir: str | os.PathLike) -> Dataset:
  """The `Dataset` of a directory holding MNIST's four files (`train-images-idx3-ubyte[.gz]`, ...).

  Image size and class count are read from them; DataError for missing or corrupt files.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(
      f"Data dir {data_dir!r} does not exist or is not a directory. Pass "
      f"--data-dir (or set {DATA_DIR_ENV}) to a directory holding the four "
      "IDX files (or to a Keras-style .npz file)."
    )
  paths = {part: _find_idx_file(data_dir, base) for part, base in IDX_FILES.items()}
  missing = [IDX_FILES[part] + "[.gz]" for part, p in paths.items() if p is None]
  if missing:
    raise DataError(
      f"Data dir {data_dir!r} lacks {', '.join(missing)}. Put all four "
      "IDX files there (gzipped or not, named as LeCun published them), or "
      "point --data-dir elsewhere."
    )
  arrays = {part: read_idx(path) for part, path in paths.items()}
  for part, path in paths.items():
    want_ndim = 3 if part.endswith("images") else 1
    if arrays[part].ndim != want_ndim:
      raise DataError(
        f"{path}: holds a {arrays[part].ndim}-D array, expected {want_ndim}-D "
        f"{part.replace('_', ' ')}. Are the files swapped or renamed?"
      )
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if len(images) != len(labels):
      raise DataError(
        f"{paths[f'{split}_images']} holds {len(images)} images but "
        f"{paths[f'{split}_labels']} holds {len(labels)} labels. The files do "
        "not belong together: replace them with matching official files."
      )
  counts = np.bincount(arrays["train_labels"])
  rare = [c for c in np.flatnonzero(counts) if counts[c] < 2]
  if rare:
    raise DataError(
      f"{paths['train_labels']}: class(es) {[int(c) for c in rare]} have a single training "
      "image, but pairs need at least 2 images of every class. Replace the file with an "
      "intact copy, or drop those classes."
    )
  return Dataset(**arrays, source=data_dir)
