"""`Feed`: what a sampler hands the placement to train one model from."""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Feed(NamedTuple):
  """One model's training input, as one sampler draws it.

  The placement (`siamese_jax.training.placement`) puts `images` and
  `tables` on the device(s) once, and calls `epoch` under jit each epoch;
  with several models it stacks their tables and vmaps `epoch`.
  """

  images: np.ndarray  # uint8[N, H, W] what the batches' indices point into
  tables: Any  # a pytree of host arrays: the epoch's arguments
  # epoch(tables, batch_key, pairs_key) -> (data, int32[S, B] batches): `data`
  # is the sampler's named arrays that `Sampler.gather` reads a batch from.
  epoch: Callable[..., tuple[dict, Any]]
  batch_size: int  # B, the rows a step splits over the devices
  static: tuple  # what fixes the epoch's shapes: models stack only if theirs agree
  shape: str  # that, in words, for the message when they do not
  hint: str  # what to do then
