"""Images from files: the one decoder, single files, and gallery folders.

`decode` is the only library module's call of PIL's `Image.open`: it
returns the pixels as the file holds them (bool[H, W] for a 1-bit image,
uint8[H, W] for 8-bit grayscale, uint8[H, W, C] for colour), or converted
to a PIL mode when asked. Omniglot's images, Lake et al.'s official runs,
`compare`, `recognize` and galleries all read through it.

`read_png` reads one image for a trained run; `read_folder` reads
`DIR/<class>/*`, as torchvision's ImageFolder lays a dataset out, into
images and their class names. Bad input is one `DataError` that names the
file or folder and the fix.
"""

import io
import os
import sys

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
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise DataError(
      f"{name}: not a readable image ({e}). Replace it with an intact file."
    ) from None


def read_png(path: str, image_shape, *, any_size: bool = False, quiet: bool = False) -> np.ndarray:
  """One grayscale image for a trained run.

  Args:
    path: the file.
    image_shape: (H, W) the run was trained on.
    any_size: the run resizes and recolours its input itself (Omniglot's
      runs): any 1-bit or 8-bit grayscale image is taken as it is, bool or
      uint8 [H', W']. Otherwise an 8-bit grayscale image of `image_shape`
      is needed.
    quiet: no note about a mostly light image.

  Raises:
    DataError: naming the file and what is wrong with it.
  """
  h, w = image_shape
  pixels = decode(path)
  if pixels.ndim != 2 or (pixels.dtype == np.bool_ and not any_size):
    kind = "a 1-bit" if pixels.dtype == np.bool_ else f"a {pixels.shape[-1]}-channel colour"
    raise DataError(
      f"{path}: {kind} image, but an 8-bit grayscale one (PIL mode L) is needed. Convert it, "
      f"e.g. PIL: Image.open(p).convert('L').resize(({w}, {h})).save(q)."
    )
  if any_size:
    return pixels
  if pixels.shape != (h, w):
    raise DataError(
      f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, but the run was trained on {w}x{h} "
      "images. Resize it to the run's image size."
    )
  if pixels.mean() > 127 and not quiet:
    print(
      f"note: {path} is mostly light; the training images are light digits on a dark "
      "background, so invert it if it is a dark digit on white.",
      file=sys.stderr,
    )
  return pixels


def read_folder(
  directory: str, image_shape, *, any_size: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """Every image of `directory/<class>/`, sorted by class then file name.

  Args:
    directory: a folder with one subfolder of images per class.
    image_shape: (H, W) every image must have (see `read_png`).
    any_size: as for `read_png`; the images must then still share one size.

  Returns:
    (images [N, H, W], str[N] class names).

  Raises:
    DataError: no such folder, no class subfolder, a class folder without
      images, a file that is not an image, or an image of another size.
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
  images, labels = [], []
  for c in classes:
    folder = os.path.join(directory, c)
    files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    if not files:
      raise DataError(f"{folder}: a class folder with no images. Add images to it, or remove it.")
    for f in files:
      images.append(read_png(os.path.join(folder, f), image_shape, any_size=any_size, quiet=True))
      labels.append(c)
  shapes = {x.shape for x in images}
  if len(shapes) > 1:
    raise DataError(
      f"{directory}: images of several sizes ({', '.join(f'{s[1]}x{s[0]}' for s in sorted(shapes))}); "
      "a gallery's images need one size."
    )
  return np.stack(images), np.asarray(labels)
