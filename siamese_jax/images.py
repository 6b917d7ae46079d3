"""Images from files: one PNG, or a gallery folder of one subfolder per class.

`read_png` reads an 8-bit grayscale PNG of a run's image size; `read_folder`
reads `DIR/<class>/*.png`, as torchvision's ImageFolder lays a dataset out,
into uint8 images and their class names. Bad input is one `DataError` that
names the file or folder and the fix.
"""

import os
import sys

import numpy as np

from siamese_jax.errors import DataError


def read_png(path: str, image_shape, *, quiet: bool = False) -> np.ndarray:
  """uint8[H, W] pixels of an 8-bit grayscale PNG of size `image_shape`.

  Raises:
    DataError: naming the file and what is wrong with it.
  """
  from PIL import Image, UnidentifiedImageError

  h, w = image_shape
  try:
    with Image.open(path) as img:
      fmt, mode, size = img.format, img.mode, img.size
      pixels = np.asarray(img) if (fmt, mode) == ("PNG", "L") else None
  except FileNotFoundError:
    raise DataError(f"{path}: no such file.") from None
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"{path}: not a readable image ({e}). Pass an 8-bit grayscale PNG.") from None
  if fmt != "PNG" or mode != "L":
    raise DataError(
      f"{path}: a {fmt} image in mode {mode}, but an 8-bit grayscale PNG (mode L) is "
      f"needed. Convert it, e.g. PIL: Image.open(p).convert('L').resize(({w}, {h})).save(q)."
    )
  if size != (w, h):
    raise DataError(
      f"{path}: {size[0]}x{size[1]} pixels, but the run was trained on {w}x{h} images. "
      "Resize it to the run's image size."
    )
  if pixels.mean() > 127 and not quiet:
    print(
      f"note: {path} is mostly light; the training images are light digits on a dark "
      "background, so invert it if it is a dark digit on white.",
      file=sys.stderr,
    )
  return pixels


def read_folder(directory: str, image_shape) -> tuple[np.ndarray, np.ndarray]:
  """Every PNG of `directory/<class>/`, sorted by class then file name.

  Args:
    directory: a folder with one subfolder of PNGs per class.
    image_shape: (H, W) every image must have.

  Returns:
    (uint8[N, H, W] images, str[N] class names).

  Raises:
    DataError: no such folder, no class subfolder, a class folder without
      images, a file that is not an image, or an image of another size.
  """
  if not os.path.isdir(directory):
    raise DataError(
      f"{directory}: no such folder. Give a folder with one subfolder of PNGs per class."
    )
  classes = sorted(e.name for e in os.scandir(directory) if e.is_dir())
  if not classes:
    raise DataError(
      f"{directory}: holds no class folders. Lay it out as {directory}/<class>/<image>.png, "
      "one subfolder per class."
    )
  images, labels = [], []
  for c in classes:
    folder = os.path.join(directory, c)
    files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    if not files:
      raise DataError(f"{folder}: a class folder with no images. Add PNGs to it, or remove it.")
    for f in files:
      images.append(read_png(os.path.join(folder, f), image_shape, quiet=True))
      labels.append(c)
  return np.stack(images), np.asarray(labels)
