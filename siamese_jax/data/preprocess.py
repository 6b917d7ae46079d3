"""A run's input: images as the dataset ships them -> what the network sees.

Three settings of the `Config` decide it, and `config.json` records them:

* `image_size`: resize every image to image_size x image_size (None: keep
  the data's size, as MNIST runs do);
* `resize_filter`: PIL's filter for that, "box" (area average: each output
  pixel is the mean of the input pixels it covers), "bilinear" or "lanczos";
* `invert`: 255 - x, for data drawn dark on light (Omniglot's black ink on
  white), so that ink is bright as in MNIST and zero padding is background.

The run preprocesses its dataset once, on the host, before training
(`preprocess_dataset`); `load_trained(W).embed` applies the same function
to the images it is given (`preprocess_images`), so both always see the
same pixels. A run without these settings changes nothing.
"""

import dataclasses

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import Dataset


def needs_preprocessing(config) -> bool:
  return config.image_size is not None or config.invert


def preprocess_images(images, config) -> np.ndarray:
  """bool or uint8 [N, H, W] (or one [H, W] image) -> uint8[N, S, S] as the run's input.

  bool images (PIL's mode "1", as Omniglot's 1-bit PNGs read) are
  True = 255 (paper), False = 0 (ink). Without preprocessing settings, the
  images come back unchanged (any dtype), so MNIST's uint8 or float inputs
  pass as before.

  Raises:
    DataError: images that are neither bool nor uint8 for a run that
      resizes or inverts, or that are not 2-D images.
  """
  if not needs_preprocessing(config):
    return images
  x = np.asarray(images)
  if x.ndim == 2:
    x = x[None]
  if x.ndim != 3:
    raise DataError(f"Expected images of shape (N, H, W), got {x.shape}.")
  if x.dtype == np.bool_:
    x = x.astype(np.uint8) * 255
  elif x.dtype != np.uint8:
    raise DataError(
      f"This run resizes or inverts its images, which needs them as the dataset ships them: "
      f"bool or uint8 pixels, not {x.dtype}. Pass the arrays PIL reads from the PNGs."
    )
  if config.invert:
    x = 255 - x
  if config.image_size is not None:
    x = resize(x, (config.image_size, config.image_size), config.resize_filter)
  return x


def resize(images: np.ndarray, shape: tuple[int, int], resize_filter: str) -> np.ndarray:
  """uint8[N, H, W] -> uint8[N, h, w] with PIL's filter ("box", "bilinear", "lanczos")."""
  if images.shape[1:] == tuple(shape):
    return images
  from PIL import Image

  resample = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
  }[resize_filter]
  h, w = shape
  out = np.empty((len(images), h, w), np.uint8)
  for i, img in enumerate(images):
    out[i] = np.asarray(Image.fromarray(img).resize((w, h), resample))
  return out


def preprocess_dataset(data: Dataset, config) -> Dataset:
  """The dataset as the run's network sees it: both splits through `preprocess_images`."""
  if not needs_preprocessing(config):
    return data
  return dataclasses.replace(
    data,
    train_images=preprocess_images(data.train_images, config),
    test_images=preprocess_images(data.test_images, config),
  )
