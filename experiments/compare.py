"""Compare two images with a trained run: distance, threshold, same or different.

    python -m experiments.compare --workdir W A.png B.png

The images are 8-bit grayscale PNGs of the run's image size (28x28 for
MNIST), a light digit on a dark background as in MNIST. Anything else is
refused with the problem and the fix (exit code 1).
"""

import argparse
import sys

import numpy as np

from siamese_jax import cli, load_trained, xla_flags
from siamese_jax.errors import DataError


def read_png(path: str, image_shape) -> np.ndarray:
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
  if pixels.mean() > 127:
    print(
      f"note: {path} is mostly light; the training images are light digits on a dark "
      "background, so invert it if it is a dark digit on white.",
      file=sys.stderr,
    )
  return pixels


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m experiments.compare", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("images", nargs=2, metavar="PNG", help="the two images to compare")
  args = parser.parse_args(argv)
  model = load_trained(args.workdir)
  a, b = (read_png(p, model.image_shape)[None] for p in args.images)
  d = float(model.distance(a, b)[0])
  print(f"distance  {d:.4f}")
  print(f"threshold {model.threshold:.4f}")
  print("same" if d < model.threshold else "different")


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
