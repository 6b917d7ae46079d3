"""Training steps: the step, the scanned chunk of steps, the epoch.

The step contract (as in flax's examples and big_vision):

    train_step(state, batch, key) -> (state, metrics)

is one jitted region holding the forward pass, the gradient, the optimizer
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
from siamese_jax.losses import LOSSES
from siamese_jax.sampling import SAMPLERS
from siamese_jax.training.augment import augment
from siamese_jax.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def train_step_body(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
  """One optimizer step on one batch, unjitted: the body that `train_step`,
  `train_chunk` and the stacked models' chunk (`siamese_jax.training.placement`) share."""
  loss, sampler = LOSSES[state.loss], SAMPLERS[LOSSES[state.loss].sampler]
  dropout_key = jax.random.fold_in(key, state.step)
  if state.augment_strength > 0:
    # Its own stream of the step's key: the same (run, step) distorts the same
    # way. A pair's two images are distorted in one call, as one batch.
    augment_key = jax.random.fold_in(dropout_key, StepKey.AUGMENT)
    names = sampler.images
    x = jnp.concatenate([batch[k] for k in names]) if len(names) > 1 else batch[names[0]]
    x = augment(augment_key, x, state.augment_strength)
    b = x.shape[0] // len(names)
    batch = {**batch, **{k: x[i * b : (i + 1) * b] for i, k in enumerate(names)}}

  def loss_fn(params):
    out = sampler.outputs(
      state.apply_fn, {"params": params}, batch, train=True, rngs={"dropout": dropout_key}
    )
    own = params.get("loss", {})  # a loss's own parameters (`Loss.learned`), if any
    return loss.fn(out, batch[sampler.target], **own, **loss_params(state)), out

  (value, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  accuracy = loss.accuracy(out, batch[sampler.target], state.threshold)
  return state, {"loss": value, "accuracy": accuracy}


def loss_params(state: TrainState) -> dict:
  """The loss's keyword arguments: its static ones, and the state's margin if it takes one."""
  params = dict(state.loss_params)
  if "margin" in LOSSES[state.loss].fields:
    params["margin"] = state.margin
  return params


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
  """One training step: gradient, optimizer update and metrics in one jit.

  Args:
    state: the TrainState; donated, so do not reuse the one passed in.
    batch: what the loss's sampler gathers (`siamese_jax.sampling.SAMPLERS`):
      pairs, {"x1": float32[B, H, W] (or [B, H * W] for the MLP), "x2":
      same, "y": float32[B] with 1.0 = same digit}; a P x K batch, {"x":
      float32[N, H, W], "labels": int32[N]}.
    key: dropout key; folded with `state.step` inside, so pass the same key
      every step.

  Returns:
    (new state, {"loss": float32[], "accuracy": float32[]}), under this
    step's dropout. Accuracy is the loss entry's: mean((d < threshold) == y)
    for the pair loss, and for a batch loss the share of images whose
    nearest other image in the batch has their label.
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
  loss = LOSSES[state.loss]
  sampler = SAMPLERS[loss.sampler]
  out = sampler.outputs(state.apply_fn, {"params": state.params}, batch, train=False)
  target = batch[sampler.target]
  own = state.params.get("loss", {})
  return {
    "loss": loss.fn(out, target, **own, **loss_params(state)),
    "accuracy": loss.accuracy(out, target, state.threshold),
  }


@jax.jit
def evaluate_batches(
  state: TrainState, embeddings: jax.Array, data: dict[str, jax.Array], batches: jax.Array
) -> Metrics:
  """The run's own loss and accuracy over validation batches, from the split's embeddings.

  Args:
    state: the TrainState (its loss, and that loss's parameters).
    embeddings: float[N, D] every image of the split, without dropout.
    data, batches: the split's batches as its sampler draws them
      (`Sampler.validation`): int32[S, B] rows into `data`.

  Returns:
    {"loss": float32[], "accuracy": float32[]}: the mean over the S batches
    (one batch: its own values, as the pair loss's one batch of every pair).
  """
  loss = LOSSES[state.loss]
  sampler = SAMPLERS[loss.sampler]

  def one(idx):
    out, target = sampler.val_outputs(embeddings, data, idx)
    accuracy = loss.accuracy(out, target, state.threshold)
    # Validation classes were never trained: a loss's own per-class
    # parameters give way to the batch's stand-ins.
    own = loss.learned.stand_in(out, target) if loss.learned is not None else {}
    target = own.pop("labels", target)
    return loss.fn(out, target, **own, **loss_params(state)), accuracy

  if batches.shape[0] == 1:
    value, accuracy = one(batches[0])
  else:
    values, accuracies = jax.lax.map(one, batches)
    value, accuracy = jnp.mean(values), jnp.mean(accuracies)
  return {"loss": value, "accuracy": accuracy}


@functools.partial(jax.jit, donate_argnums=0, static_argnames="length")
def train_chunk(
  state: TrainState,
  images: jax.Array,
  data: dict[str, jax.Array],
  batches: jax.Array,
  start: jax.Array,
  key: jax.Array,
  *,
  length: int,
) -> tuple[TrainState, Metrics]:
  """Runs steps `start .. start + length` of an epoch in one `lax.scan`.

  Args:
    state: donated TrainState.
    images: uint8[N, H, W] the split's images, on the device.
    data: the epoch's named arrays, as the loss's sampler gathers a batch
      from them (`siamese_jax.sampling.SAMPLERS`): the pairs sampler's
      {"pairs": int32[P, 2], "y": float32[P]}, the P x K sampler's
      {"labels": int32[N]}.
    batches: int32[S, B] the epoch's batches: rows of `data["pairs"]`, or of
      `images`.
    start: int32[] first step of this chunk within `batches`.
    key: dropout key, as for `train_step`.
    length: number of steps (static: each distinct length compiles once).

  Returns:
    (state, {"loss": float32[length], "accuracy": float32[length]}).
  """
  return chunk_body(state, images, data, batches, start, key, length=length)


def chunk_body(state, images, data, batches, start, key, *, length: int):
  """`train_chunk` unjitted: the scan of `train_step_body` that every placement runs."""
  rows = jax.lax.dynamic_slice_in_dim(batches, start, length)
  gather = SAMPLERS[LOSSES[state.loss].sampler].gather

  def body(state, idx):
    return train_step_body(state, gather(images, data, idx), key)

  return jax.lax.scan(body, state, rows)


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
  data: dict[str, jax.Array],
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
    images, data: the training split on the device, as for `train_chunk`.
    batches: int32[S, B] the epoch's batches (int32[K, S, B] with a
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
      state, images, data, batches, first, key, length=length
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
