"""Training steps: the step, the scanned chunk of steps, the epoch.

The step contract (as in flax's examples and big_vision):

    train_step(state, batch, key) -> (state, metrics)

is one jitted region holding the forward pass, the gradient, the RMSProp
update and the metrics; the state is donated, and dropout's randomness is
`fold_in(key, state.step)`, so the caller passes the same key every step and
no key lives in the state.

For speed the run does not call `train_step` once per batch. The data sit on
the device (uint8 images, int32 pair indices), and `train_chunk` runs many
steps in one `lax.scan`, gathering each batch on the device. It calls the
same `train_step_body` function, and a test checks that it gives bitwise the same
parameters and metrics as looping the public `train_step`.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.core.streams import StepKey
from siamese_jax.losses import (
  BATCH_LOSSES,
  LOSS_FIELDS,
  contrastive_loss,
  nearest_neighbour_accuracy,
  pair_accuracy,
)
from siamese_jax.sampling.shuffle import permutation
from siamese_jax.sampling.splits import steps_per_epoch
from siamese_jax.training.augment import augment
from siamese_jax.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def train_step_body(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
  """One optimizer step on one batch, unjitted: the body that `train_step`,
  `train_chunk` and the stacked models' chunk (`siamese_jax.training.placement`) share."""
  dropout_key = jax.random.fold_in(key, state.step)
  pairs = state.loss == "contrastive"
  if state.augment_strength > 0:
    # Its own stream of the step's key: the same (run, step) distorts the same way.
    augment_key = jax.random.fold_in(dropout_key, StepKey.AUGMENT)
    if pairs:
      b = batch["x1"].shape[0]
      x = augment(augment_key, jnp.concatenate([batch["x1"], batch["x2"]]), state.augment_strength)
      batch = {**batch, "x1": x[:b], "x2": x[b:]}
    else:
      batch = {**batch, "x": augment(augment_key, batch["x"], state.augment_strength)}

  def pair_loss(params):
    d = state.apply_fn(
      {"params": params}, batch["x1"], batch["x2"], train=True, rngs={"dropout": dropout_key}
    )
    return contrastive_loss(d, batch["y"], state.margin), d

  def batch_loss(params):
    e = state.apply_fn(
      {"params": params}, batch["x"], train=True, rngs={"dropout": dropout_key}, method="encode"
    )
    return BATCH_LOSSES[state.loss](e, batch["labels"], **_params(state)), e

  (loss, out), grads = jax.value_and_grad(pair_loss if pairs else batch_loss, has_aux=True)(
    state.params
  )
  state = state.apply_gradients(grads=grads)
  if pairs:
    accuracy = pair_accuracy(out, batch["y"], state.threshold)
  else:
    accuracy = nearest_neighbour_accuracy(out, batch["labels"])
  return state, {"loss": loss, "accuracy": accuracy}


def _params(state: TrainState) -> dict:
  """The batch loss's keyword arguments: its static ones, and the state's margin if it has one."""
  params = dict(state.loss_params)
  if "margin" in LOSS_FIELDS[state.loss]:
    params["margin"] = state.margin
  return params


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
  """One training step: gradient, RMSProp update and metrics in one jit.

  Args:
    state: the TrainState; donated, so do not reuse the one passed in.
    batch: for the pair loss (`state.loss == "contrastive"`), {"x1":
      float32[B, H, W] (or [B, H * W] for the MLP), "x2": same, "y":
      float32[B] with 1.0 = same digit}; for a batch loss, {"x":
      float32[N, H, W], "labels": int32[N]} (a P x K batch).
    key: dropout key; folded with `state.step` inside, so pass the same key
      every step.

  Returns:
    (new state, {"loss": float32[], "accuracy": float32[]}), under this
    step's dropout. Accuracy is mean((d < threshold) == y) for pairs, and
    the share of images whose nearest other image in the batch has their
    label for a batch loss.
  """
  return train_step_body(state, batch, key)


@jax.jit
def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """Loss and accuracy of a batch without dropout.

  Args:
    state: the TrainState.
    batch: as for `train_step`.

  Returns:
    {"loss": float32[], "accuracy": float32[]}.
  """
  if state.loss != "contrastive":
    e = state.apply_fn({"params": state.params}, batch["x"], method="embed")
    return {
      "loss": BATCH_LOSSES[state.loss](e, batch["labels"], **_params(state)),
      "accuracy": nearest_neighbour_accuracy(e, batch["labels"]),
    }
  d = state.apply_fn({"params": state.params}, batch["x1"], batch["x2"], train=False)
  return {
    "loss": contrastive_loss(d, batch["y"], state.margin),
    "accuracy": pair_accuracy(d, batch["y"], state.threshold),
  }


def gather_batch(images: jax.Array, pairs: jax.Array, y: jax.Array, idx: jax.Array) -> Batch:
  """Forms a batch on the device from indices.

  Args:
    images: uint8[N, H, W] the split's images, on the device.
    pairs: int32[P, 2] indices into `images`.
    y: float32[P] pair labels.
    idx: int32[B] which pairs form this batch.

  Returns:
    {"x1": float32[B, H, W], "x2": float32[B, H, W], "y": float32[B]},
    pixels scaled to [0, 1] as the original does (x / 255).
  """
  p = pairs[idx]
  # One gather for both images of every pair: on CPU, XLA turns two gathers
  # joined by a concatenate (which `Siamese` then undoes) into a slower loop
  # (docs/performance.md).
  x = images[jnp.concatenate([p[:, 0], p[:, 1]])].astype(jnp.float32) / 255.0
  b = idx.shape[0]
  return {"x1": x[:b], "x2": x[b:], "y": y[idx]}


def gather_images(images: jax.Array, labels: jax.Array, idx: jax.Array) -> Batch:
  """Forms a P x K batch on the device from image indices.

  Args:
    images: uint8[N, H, W] the split's images, on the device.
    labels: int32[N] their class labels.
    idx: int32[B] which images form this batch (`siamese_jax.sampling.pk`).

  Returns:
    {"x": float32[B, H, W] scaled to [0, 1], "labels": int32[B]}.
  """
  return {"x": images[idx].astype(jnp.float32) / 255.0, "labels": labels[idx]}


@functools.partial(jax.jit, donate_argnums=0, static_argnames="length")
def train_chunk(
  state: TrainState,
  images: jax.Array,
  pairs: jax.Array,
  y: jax.Array,
  batches: jax.Array,
  start: jax.Array,
  key: jax.Array,
  *,
  length: int,
) -> tuple[TrainState, Metrics]:
  """Runs steps `start .. start + length` of an epoch in one `lax.scan`.

  Args:
    state: donated TrainState.
    images, pairs, y: the split on the device, as for `gather_batch`; for a
      batch loss, `pairs` is instead int32[N] each image's label and `y` is
      None, as for `gather_images`.
    batches: int32[S, B] the epoch's batches of pair indices (a batch loss:
      of image indices).
    start: int32[] first step of this chunk within `batches`.
    key: dropout key, as for `train_step`.
    length: number of steps (static: each distinct length compiles once).

  Returns:
    (state, {"loss": float32[length], "accuracy": float32[length]}).
  """
  return chunk_body(state, images, pairs, y, batches, start, key, length=length)


def chunk_body(state, images, pairs, y, batches, start, key, *, length: int):
  """`train_chunk` unjitted: the scan of `train_step_body` that every placement runs."""
  rows = jax.lax.dynamic_slice_in_dim(batches, start, length)

  def body(state, idx):
    if state.loss == "contrastive":
      batch = gather_batch(images, pairs, y, idx)
    else:
      batch = gather_images(images, pairs, idx)
    return train_step_body(state, batch, key)

  return jax.lax.scan(body, state, rows)


def epoch_batches(key: jax.Array, num_pairs: int, batch_size: int) -> jax.Array:
  """A fresh permutation of the pairs, cut into full batches.

  The last `num_pairs % batch_size` pairs of each permutation are left out,
  so every step has the same shape and compiles once; a new permutation every
  epoch means no pair is left out systematically.

  Returns:
    int32[num_pairs // batch_size, batch_size].
  """
  steps = steps_per_epoch(num_pairs, batch_size)
  perm = permutation(key, num_pairs)  # cheaper than jax.random.permutation on CPU
  return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def chunk_lengths(steps: int, target: int) -> list[int]:
  """Splits `steps` into chunks of about `target` steps, preferring one length.

  Each distinct length compiles `train_chunk` once, so
  equal chunks are used when a divisor of `steps` lies within a factor of 2
  of `target` (846 steps -> 6 x 141). Otherwise the split is near-equal,
  with two lengths (k and k + 1).
  """
  if steps <= 0:
    return []
  target = max(1, target)
  divisors = [k for k in range(max(1, target // 2), min(steps, 2 * target) + 1) if steps % k == 0]
  if divisors:
    k = min(divisors, key=lambda k: (abs(k - target), -k))
    return [k] * (steps // k)
  n = max(1, round(steps / target))
  base, extra = divmod(steps, n)
  return [base + 1] * extra + [base] * (n - extra)


class EpochResult(NamedTuple):
  """What `train_epoch` returns."""

  state: TrainState
  metrics: dict[str, np.ndarray]  # per-step {"loss", "accuracy"}: float32[n] (or [K, n])
  done: int  # steps of the epoch done, counted from its first step


def train_epoch(
  state: TrainState,
  images: jax.Array,
  pairs: jax.Array,
  y: jax.Array,
  batches: jax.Array,
  key: jax.Array,
  *,
  start: int = 0,
  chunk_steps: int = 200,
  on_chunk: Callable[[int, int, dict[str, np.ndarray]], bool | None] | None = None,
  chunk_fn: Callable[..., tuple[TrainState, Metrics]] | None = None,
  fetch: Callable[[Metrics], dict[str, np.ndarray]] = parallel.to_host,
) -> EpochResult:
  """Trains over `batches[start:]`, a chunk of steps per dispatch.

  Metrics stay on the device until their chunk has run; the next chunk is
  dispatched before the host waits for the previous one, so the device does
  not idle while the host reports progress.

  Args:
    state: donated TrainState.
    images, pairs, y: the training split on the device.
    batches: int32[S, B] from `epoch_batches` (int32[K, S, B] with a
      `chunk_fn` that runs K models at once, as `siamese_jax.training.placement`).
    key: dropout key.
    start: first step to take (a resumed epoch starts part-way).
    chunk_steps: about how many steps to run per dispatch.
    on_chunk: called as on_chunk(steps_done, steps_total, chunk_metrics)
      after each chunk, with that chunk's per-step metrics on the host. If it
      returns True the epoch stops early (after the chunk already in flight).
    chunk_fn: the jitted chunk runner, `train_chunk` if None (the benchmark
      passes an undonated copy to measure what donation buys).
    fetch: device metrics -> host arrays (models spread over several
      processes gather theirs).

  Returns:
    (state, per-step metrics {"loss": float32[n], "accuracy": float32[n]} of
    the n steps taken, steps_done counted from the epoch's first step).
  """
  total = batches.shape[-2]  # steps; a leading axis, if any, is the models'
  done, offset = start, start
  pending = None
  stop = False
  collected = []

  def finish(item):
    nonlocal done, stop
    length, metrics = item
    host = fetch(metrics)
    collected.append(host)
    done += length
    if on_chunk is not None and on_chunk(done, total, host):
      stop = True

  for length in chunk_lengths(total - start, chunk_steps):
    # The chunk's first step is the one host-to-device copy per chunk, and an
    # explicit one (a test runs this loop under a transfer guard).
    first = jax.device_put(np.int32(offset))
    state, metrics = (chunk_fn or train_chunk)(
      state, images, pairs, y, batches, first, key, length=length
    )
    offset += length
    if pending is not None:
      finish(pending)
    pending = (length, metrics)
    if stop:
      break
  if pending is not None:
    finish(pending)
  if not collected:
    empty = np.zeros((*batches.shape[:-2], 0), np.float32)
    return EpochResult(state, {"loss": empty, "accuracy": empty}, done)
  metrics = {k: np.concatenate([m[k] for m in collected], axis=-1) for k in collected[0]}
  return EpochResult(state, metrics, done)
