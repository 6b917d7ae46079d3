"""Images from files: the one decoder, single files, and gallery folders.

`decode` is the library's only `Image.open`: the pixels as the file holds
them (bool, uint8 grey or uint8 colour), or converted to a PIL mode.
`to_uint8` is the one normaliser of depths (1-bit, 8-bit, 16-bit and
floats in [0, 1] become the same picture in 8 bits). Images over
`MAX_PIXELS` are refused from their header. `read_image` reads 8-bit grey;
`image_files` lists a folder's images and `read_folder` a gallery laid out
as `DIR/<class>/*` (torchvision's ImageFolder). Bad input is one
`DataError` naming the file and the fix.
"""

import io
import os
import sys
import warnings
import zlib

import numpy as np

from siamese_jax.core.errors import DataError

# Far above any image this project reads (Omniglot's are 105 x 105, phone photos
# about 50 megapixels), far below what exhausts memory.
MAX_PIXELS = 100_000_000


def to_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
  """The same picture in 8 bits: bool 0/255, 0..255 as is, uint16 x / 257, floats x * 255.

  Raises DataError naming `name` for another dtype or values out of range.
  """
  x = np.asarray(pixels)
  if x.dtype == np.uint8:
    return x
  if x.dtype == np.bool_:
    return x.astype(np.uint8) * np.uint8(255)
  if x.dtype == np.uint16:
    return np.round(x.astype(np.float64) / 257.0).astype(np.uint8)
  if np.issubdtype(x.dtype, np.integer):
    if x.size and (x.min() < 0 or x.max() > 255):
      raise DataError(
        f"{name}: {x.dtype} pixels {x.min()}..{x.max()} are not 8-bit. Pass uint8 pixels "
        "0..255, or uint16 for a 16-bit image."
      )
    return x.astype(np.uint8)
  if np.issubdtype(x.dtype, np.floating):
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
      raise DataError(
        f"{name}: float pixels must lie in [0, 1], found {np.nanmin(x):g}..{np.nanmax(x):g}. "
        "Divide by 255, or pass uint8."
      )
    return np.round(x.astype(np.float64) * 255.0).astype(np.uint8)
  raise DataError(f"{name}: pixels of type {x.dtype} are not an image. Pass uint8 pixels 0..255.")


def decode(source: bytes | str, name: str | None = None, *, mode: str | None = None) -> np.ndarray:
  """The pixels of one file (bytes or path): bool[H, W] ("1"), uint8[H, W] ("L"), uint8[H, W, C].

  `mode` converts first (None keeps the file's); DataError if missing or unreadable.
  """
  from PIL import Image, UnidentifiedImageError

  name = name or (source if isinstance(source, str) else "<bytes>")
  try:
    with warnings.catch_warnings():
      # `MAX_PIXELS` is the policy: PIL's warning above its own, lower limit
      # would only repeat, beside our refusal or an image we accept.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    with img:
      w, h = img.size  # from the header: a bomb is refused before it is decoded
      if w * h > MAX_PIXELS:
        raise DataError(
          f"{name}: {w}x{h} pixels, more than the {MAX_PIXELS:,} any image here may have (a "
          "decompression bomb, or not an image for this model). Give a smaller image."
        )
      if mode == "L" and (img.mode.startswith("I") or img.mode == "F"):
        # 16-bit and float images: scaled to 8 bits by `to_uint8`, where
        # PIL's convert("L") would clip 65535 to 255 and 1.0 to 1. PIL opens
        # 16-bit PNGs as 32-bit "I": their values are 16-bit.
        x = np.asarray(img)
        if img.mode.startswith("I"):
          if x.size and (x.min() < 0 or x.max() > 65535):
            raise DataError(f"{name}: pixels beyond 16 bits; save it as an 8- or 16-bit image.")
          x = x.astype(np.uint16)
        return to_uint8(x, name)
      return np.asarray(img if mode is None else img.convert(mode))
  except FileNotFoundError:
    raise DataError(f"{name}: no such file.") from None
  except Image.DecompressionBombError as e:  # PIL's own check, past its larger limit
    raise DataError(
      f"{name}: {e}: more than the {MAX_PIXELS:,} pixels any image here may have (a "
      "decompression bomb). Give a smaller image."
    ) from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, zlib.error) as e:
    # PIL reports a broken stream as any of these (SyntaxError: a bad PNG chunk).
    raise DataError(
      f"{name}: not a readable image ({e or type(e).__name__}). Replace it with an intact file."
    ) from None


def is_image_file(name: str) -> bool:
  """Whether the name ends in an extension PIL reads (.png, .jpg, .bmp, .gif, .tif, ...)."""
  from PIL import Image

  Image.init()
  return os.path.splitext(name)[1].lower() in Image.registered_extensions()


def read_image(path: str) -> np.ndarray:
  """uint8[H, W]: any image PIL reads, as 8-bit grey (colour as luma); DataError if not."""
  return decode(path, mode="L")


def image_files(directory: str, *, what: str = "a folder") -> list[str]:
  """The image files in `directory`, sorted, others skipped with a warning; DataError if none."""
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such folder. Give a folder of images.")
  names = sorted(e.name for e in os.scandir(directory) if e.is_file() and e.name[0] != ".")
  images = [n for n in names if is_image_file(n)]
  skipped = [n for n in names if not is_image_file(n)]
  if skipped:
    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    print(f"warning: {directory}: skipped {len(skipped)} file(s) that are not images: {shown}",
          file=sys.stderr)  # fmt: skip
  if not images:
    raise DataError(
      f"{directory}: {what} with no images (.png, .jpg, ...). Add images to it, or remove it."
    )
  return [os.path.join(directory, n) for n in images]


def read_folder(directory: str) -> tuple[list[str], np.ndarray]:
  """(paths [N], str[N] classes) of `directory/<class>/*`, sorted; DataError if missing or empty."""
  if not os.path.isdir(directory):
    raise DataError(
      f"{directory}: no such folder. Give a folder with one subfolder of images per class."
    )
  classes = sorted(e.name for e in os.scandir(directory) if e.is_dir())
  if not classes:
    raise DataError(
      f"{directory}: holds no class folders. Lay it out as {directory}/<class>/<image>.png, "
      "one subfolder per class."
    )
  paths, labels = [], []
  for c in classes:
    files = image_files(os.path.join(directory, c), what="a class folder")
    paths += files
    labels += [c] * len(files)
  return paths, np.asarray(labels)
