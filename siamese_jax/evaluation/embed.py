"""The one embedder: every image once, a chunk at a time, on the device, without dropout.

Validation, the final evaluation and `TrainedModel.embed` all use it.
uint8 images are scaled to [0, 1] on the device as in training; floats are
taken as they are. The chunk fits a working-memory budget: 2,048 images for
the MLP, far fewer for a convolutional encoder.

A state is evaluated with `eval_params`: the parameters, or their moving
average where `Config.ema_decay` keeps one. Two settings of a finished
model build on it (`embed_models`):
* test-time views (`Config.tta_shift`, `Config.tta_turn`): an image's
  embedding is the mean over itself, 4 copies moved that many pixels up,
  down, left and right, and 2 copies turned that many degrees each way
  about the centre (bilinear, zero outside), renormalized when the loss
  measures unit vectors;
* an ensemble: K models' embeddings side by side, divided by sqrt(K), so a
  squared distance is the mean of the members' squared distances.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from siamese_jax.core.parallel import chunked_rows
from siamese_jax.data.augment import warp
from siamese_jax.losses import LOSSES
from siamese_jax.losses.batch import normalize as unit

# The test-time moves, (rows, columns) in units of the shift: the image and 4 moves.
VIEWS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def views(shift: float, turn: float) -> list[tuple[tuple, tuple]]:
  """The test-time views: (2x2 linear map for `warp`, move in units of `shift`) each.

  The image itself, then 4 moves if `shift`, then 2 turns (+/- `turn` degrees) if
  `turn`; the moves come first so that a run without turns keeps its old sum.
  """
  eye = ((1.0, 0.0), (0.0, 1.0))
  out = [(eye, (0.0, 0.0))]
  if shift:
    out += [(eye, v) for v in VIEWS[1:]]
  for sign in (1, -1) if turn else ():
    c, s = math.cos(math.radians(sign * turn)), math.sin(math.radians(sign * turn))
    out.append((((c, -s), (s, c)), (0.0, 0.0)))
  return out


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


def embed(
  apply_fn, params, images, *, chunk: int | None = None, shift: float = 0.0, turn: float = 0.0,
  normalize=False,
) -> jax.Array:  # fmt: skip
  """float32[N, D]: uint8[N, H, W] (or floats in [0, 1]) embedded once, `chunk` at a time.

  With `shift` or `turn` > 0, each embedding is the mean over the test-time
  views (module doc), made unit length again if `normalize`.
  """
  if chunk is None:
    chunk = _chunk_for(apply_fn, params, tuple(images.shape[1:]))
    if shift or turn:  # the views' working set is the chunk's, once per view
      chunk = max(1, chunk // len(views(shift, turn)))
  if images.shape[0] == 0:
    dim = _dim(apply_fn, params, tuple(images.shape[1:]))
    return jnp.zeros((0, dim), jnp.float32)
  return _embed(apply_fn, params, images, chunk=chunk, shift=float(shift), turn=float(turn),
                normalize=normalize)  # fmt: skip


def embed_models(
  apply_fn, members: Sequence, images, *, shift: float = 0.0, turn: float = 0.0,
  normalize: bool = False,
) -> jax.Array:  # fmt: skip
  """float32[N, K * D]: K models' `embed`s (parameters `members`) joined (module doc).

  One member is its own `embed`, bitwise.
  """
  parts = [embed(apply_fn, p, images, shift=shift, turn=turn, normalize=normalize)
           for p in members]  # fmt: skip
  if len(parts) == 1:
    return parts[0]
  return jnp.concatenate(parts, axis=1) / math.sqrt(len(parts))


def embedder(apply_fn, members: Sequence, config) -> Callable[[jax.Array], jax.Array]:
  """Images -> embeddings as a trained run gives them: its members, its loss's norm, its views."""
  normalize = LOSSES[config.loss].normalize
  shift, turn = config.tta_shift, config.tta_turn
  return lambda x: embed_models(apply_fn, members, x, shift=shift, turn=turn, normalize=normalize)


class AveragedParams(NamedTuple):
  """The optimizer state that `--ema-decay` adds (`training.state`): the parameters' moving average."""

  params: Any  # the parameters' pytree


def eval_params(state):
  """The parameters a train state is evaluated with: their average if `--ema-decay` keeps one."""
  kept = [
    x
    for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, AveragedParams))
    if isinstance(x, AveragedParams)
  ]
  return kept[0].params if kept else state.params


def embed_images(state, images: jax.Array, *, chunk: int | None = None) -> jax.Array:
  """`embed` with a train state's model and evaluated parameters: float32[N, D]."""
  return embed(state.apply_fn, eval_params(state), images, chunk=chunk)


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


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk", "shift", "turn", "normalize"))
def _embed(
  apply_fn, params, images: jax.Array, *, chunk: int, shift: float = 0.0, turn: float = 0.0,
  normalize: bool = False,
) -> jax.Array:  # fmt: skip
  n = images.shape[0]
  dim = _dim(apply_fn, params, images.shape[1:])

  def embed_rows(start, size):
    x = jax.lax.dynamic_slice_in_dim(images, start, size).astype(jnp.float32)
    if images.dtype == jnp.uint8:
      x = x / 255.0
    if not (shift or turn):
      return apply_fn({"params": params}, x, method="embed")
    side = jnp.array(x.shape[1:], jnp.float32)
    out = [
      apply_fn({"params": params}, warp(x, jnp.broadcast_to(jnp.array(a, jnp.float32), (size, 2, 2)),
               jnp.broadcast_to(jnp.array(v, jnp.float32) * shift / side, (size, 2))),
               method="embed")
      for a, v in views(shift, turn)
    ]  # fmt: skip
    mean = sum(out) / len(out)
    return unit(mean) if normalize else mean

  return chunked_rows(embed_rows, n, chunk, (dim,), jnp.float32)
