"""The one embedder: every image once, a chunk at a time, on the device, without dropout.

Validation, the final evaluation and `TrainedModel.embed` all use it.
uint8 images are scaled to [0, 1] on the device as in training; floats are
taken as they are. The chunk fits a working-memory budget: 2,048 images for
the MLP, far fewer for a convolutional encoder.
"""

import functools

import jax
import jax.numpy as jnp

from siamese_jax.core.parallel import chunked_rows

EMBED_BUDGET_BYTES = 256 * 2**20


def embed_chunk_size(apply_fn, params, image_shape, budget_bytes: int = EMBED_BUDGET_BYTES) -> int:
  """A power of two in [16, 2048] whose working set (scaled from 64 images') fits the budget."""
  probe = 64
  fn = jax.jit(lambda p, x: apply_fn({"params": p}, x, method="embed"))
  x = jax.ShapeDtypeStruct((probe, *image_shape), jnp.float32)
  try:
    stats = fn.lower(params, x).compile().memory_analysis()
    per_image = stats.temp_size_in_bytes / probe
  except Exception:  # a backend without memory statistics: the old default
    return 2048
  chunk = 2048
  while chunk > 16 and chunk * per_image > budget_bytes:
    chunk //= 2
  return chunk


def embed(apply_fn, params, images, *, chunk: int | None = None) -> jax.Array:
  """float32[N, D]: uint8[N, H, W] (or floats in [0, 1]) embedded once, `chunk` at a time."""
  if chunk is None:
    chunk = _chunk_for(apply_fn, params, tuple(images.shape[1:]))
  if images.shape[0] == 0:
    dim = _dim(apply_fn, params, tuple(images.shape[1:]))
    return jnp.zeros((0, dim), jnp.float32)
  return _embed(apply_fn, params, images, chunk=chunk)


def embed_images(state, images: jax.Array, *, chunk: int | None = None) -> jax.Array:
  """`embed` with a train state's model and parameters: float32[N, D]."""
  return embed(state.apply_fn, state.params, images, chunk=chunk)


_CHUNKS: dict = {}


def _chunk_for(apply_fn, params, image_shape) -> int:
  shapes = tuple((x.shape, x.dtype) for x in jax.tree.leaves(params))
  key = (apply_fn, shapes, image_shape)
  if key not in _CHUNKS:  # one probe compilation per model and image size
    _CHUNKS[key] = embed_chunk_size(apply_fn, params, image_shape)
  return _CHUNKS[key]


def _dim(apply_fn, params, image_shape) -> int:
  """D, the embedding width, from the model's shapes alone."""
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  return jax.eval_shape(lambda p, x: apply_fn({"params": p}, x, method="embed"), params, x).shape[
    -1
  ]


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _embed(apply_fn, params, images: jax.Array, *, chunk: int) -> jax.Array:
  n = images.shape[0]
  dim = _dim(apply_fn, params, images.shape[1:])

  def embed_rows(start, size):
    x = jax.lax.dynamic_slice_in_dim(images, start, size).astype(jnp.float32)
    if images.dtype == jnp.uint8:
      x = x / 255.0
    return apply_fn({"params": params}, x, method="embed")

  return chunked_rows(embed_rows, n, chunk, (dim,), jnp.float32)
