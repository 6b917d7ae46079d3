"""Images from files: the one decoder, single files, and gallery folders.

`decode` is the only library module's call of PIL's `Image.open`: it
returns the pixels as the file holds them (bool[H, W] for a 1-bit image,
uint8[H, W] for 8-bit grayscale, uint8[H, W, C] for colour), or converted
to a PIL mode when asked. Omniglot's images, Lake et al.'s official runs,
`compare`, `recognize` and galleries all read through it.

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
      return np.asarray(img if mode is None else img.convert(mode))
  except FileNotFoundError:
    raise DataError(f"{name}: no such file.") from None
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
