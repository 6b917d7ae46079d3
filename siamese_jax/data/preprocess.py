"""A run's input: images as the dataset ships them -> what the network sees.

`image_size` (None keeps the size), `resize_filter` ("box", "bilinear",
"lanczos") and `invert` (255 - x: Omniglot's black ink becomes bright, as
in MNIST, and zero padding background). The run applies them once to its
dataset; `load_trained(W).embed` applies the same function to its images.
"""

import dataclasses

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import Dataset


def needs_preprocessing(config) -> bool:
  return config.image_size is not None or config.invert


def preprocess_images(images, config) -> np.ndarray:
  """bool or uint8 [N, H, W] (or [H, W]) -> uint8[N, S, S], the run's input (bool True: 255).

  Without settings the images come back unchanged. Raises DataError for
  other dtypes when resizing or inverting, or for images that are not 2-D.
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
