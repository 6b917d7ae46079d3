"""Training steps: the step, the scanned chunk of steps, the epoch.

`train_step(state, batch, key) -> (state, metrics)` (as in flax's examples
and big_vision) is one jitted region: forward, gradient, update, metrics.
The state is donated; dropout uses `fold_in(key, state.step)`, so the same
key is passed every step and none lives in the state. The run itself scans
`train_step_body` over many steps per dispatch (`train_chunk`), gathering
each batch from device-resident data; a test checks it is bitwise the same
as looping `train_step`.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.core.streams import StepKey
from siamese_jax.data.augment import augment
from siamese_jax.evaluation.embed import eval_params
from siamese_jax.losses import LEARNED, LOSSES
from siamese_jax.sampling import SAMPLERS
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
    own = params.get(LEARNED, {})  # a loss's own parameters (`Loss.learned`), if any
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
    state: donated; do not reuse the one passed in.
    batch: what the loss's sampler gathers: pairs {"x1", "x2": float32[B, H, W]
      (or [B, H * W]), "y": float32[B], 1.0 = same}; P x K {"x":
      float32[N, H, W], "labels": int32[N]}.
    key: dropout key, folded with `state.step` inside: pass the same every step.

  Returns:
    (state, {"loss", "accuracy": float32[]}); accuracy is the loss entry's
    (pairs: mean((d < threshold) == y); a batch loss: the share of images
    whose nearest other image in the batch shares their label).
  """
  return train_step_body(state, batch, key)


@jax.jit
def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """{"loss", "accuracy": float32[]} of a batch (as for `train_step`) without dropout."""
  loss = LOSSES[state.loss]
  sampler = SAMPLERS[loss.sampler]
  params = eval_params(state)
  out = sampler.outputs(state.apply_fn, {"params": params}, batch, train=False)
  target = batch[sampler.target]
  own = params.get(LEARNED, {})
  return {
    "loss": loss.fn(out, target, **own, **loss_params(state)),
    "accuracy": loss.accuracy(out, target, state.threshold),
  }


@jax.jit
def evaluate_batches(
  state: TrainState, embeddings: jax.Array, data: dict[str, jax.Array], batches: jax.Array
) -> Metrics:
  """The run's own loss and accuracy: the mean over validation batches.

  `embeddings` float[N, D] is the split's without dropout; `data` and
  `batches` int32[S, B] are its batches as `Sampler.validation` draws them.
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
    data: the epoch's arrays the sampler gathers from (pairs: {"pairs":
      int32[P, 2], "y": float32[P]}; P x K: {"labels": int32[N]}).
    batches: int32[S, B] the epoch's batches (rows of `data["pairs"]` or `images`).
    start: int32[] the chunk's first step; key: as for `train_step`.
    length: steps (static: each distinct length compiles once).

  Returns:
    (state, {"loss", "accuracy": float32[length]}).
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
  """Splits `steps` into chunks of about `target`, preferring one length (each compiles once).

  A divisor of `steps` within a factor 2 of `target` gives equal chunks
  (846 -> 6 x 141); otherwise two lengths, k and k + 1.
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

  The next chunk is dispatched before the host waits for the last one's
  metrics, so the device does not idle while the host reports.

  Args:
    state, images, data, key: as for `train_chunk`.
    batches: int32[S, B] (int32[K, S, B] for a `chunk_fn` running K models).
    start: first step to take (a resumed epoch starts part-way).
    chunk_steps: about how many steps per dispatch.
    on_chunk: on_chunk(steps_done, steps_total, host_metrics) after each
      chunk; True stops the epoch after the chunk in flight.
    chunk_fn: the jitted chunk, `train_chunk` if None.
    fetch: device metrics -> host arrays (several processes gather theirs).

  Returns:
    (state, per-step {"loss", "accuracy"} float32[n] of the n steps taken,
    steps done counted from the epoch's first).
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
