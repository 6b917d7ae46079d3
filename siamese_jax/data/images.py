"""Images from files: the one decoder, single files, and gallery folders.

`decode` is the only library module's call of PIL's `Image.open`: it
returns the pixels as the file holds them (bool[H, W] for a 1-bit image,
uint8[H, W] for 8-bit grayscale, uint8[H, W, C] for colour), or converted
to a PIL mode when asked. Omniglot's images, Lake et al.'s official runs,
`compare`, `recognize` and galleries all read through it.

`to_uint8` is the one normaliser of pixel depths: 1-bit, 8-bit, 16-bit and
floats in [0, 1] all become the 8-bit picture they are (a 16-bit 65535 is
255, not clipped from 65535; a float 1.0 is 255), whatever reads them.
An image larger than `MAX_PIXELS` (a decompression bomb) is refused from
its header, before its pixels are decoded.

`read_image` reads any image as 8-bit grayscale; `image_files` lists a
folder's images and `read_folder` a gallery's, `DIR/<class>/*`, as
torchvision's ImageFolder lays a dataset out. A trained run turns what they
read into its own input (`siamese_jax.recognition.trained.TrainedModel.embed_files`).
Bad input is one `DataError` that names the file or folder and the fix.
"""

import io
import os
import sys
import zlib

import numpy as np

from siamese_jax.core.errors import DataError

# Far above any image this project reads (Omniglot's are 105 x 105, phone photos
# about 50 megapixels), far below what exhausts memory.
MAX_PIXELS = 100_000_000


def to_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
  """uint8 pixels of the same picture in 8 bits: the one normaliser of every depth.

  bool (1-bit): 0 or 255. uint8, and other integer types within 0..255: as
  is. uint16 (a 16-bit image): round(x / 257), so 65535 is 255. Floats
  within [0, 1]: round(x * 255).

  Raises:
    DataError: another dtype, or values outside those ranges, naming `name`.
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
  """The pixels of one image file.

  Args:
    source: the file's bytes, or its path.
    name: how to name it in errors (the path, by default).
    mode: a PIL mode ("L", "RGB", ...) to convert to first; None keeps
      the file's own.

  Returns:
    The pixel array: bool[H, W] for mode "1", uint8[H, W] for "L",
    uint8[H, W, C] for colour modes.

  Raises:
    DataError: no such file, or not a readable image.
  """
  from PIL import Image, UnidentifiedImageError

  name = name or (source if isinstance(source, str) else "<bytes>")
  try:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
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
  """uint8[H, W]: any image PIL reads, as 8-bit grayscale (1-bit as 0/255, colour as luma).

  Raises:
    DataError: no such file, or not a readable image.
  """
  return decode(path, mode="L")


def image_files(directory: str, *, what: str = "a folder") -> list[str]:
  """The image files directly in `directory`, sorted; other files are skipped with one warning.

  Raises:
    DataError: no such folder, or no image in it.
  """
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
  """The image files of `directory/<class>/`, sorted by class then file name.

  A gallery as torchvision's ImageFolder lays a dataset out. Files that are
  not images are skipped with a warning naming them (`image_files`).

  Returns:
    (paths [N], str[N] class names); the files are read by whoever embeds them.

  Raises:
    DataError: no such folder, no class subfolder, or a class folder without images.
  """
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
