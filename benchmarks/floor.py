"""A training step against its floor: the step's matmuls alone.

`floor_epoch_seconds` times an epoch of the step's eight matmuls and
nothing else; `experiments.benchmark` prints the training epoch as a
multiple of it. `step_breakdown` answers where the rest of the step goes:
it builds the MLP step up from those matmuls one piece at a time, each
stage a whole scanned epoch, and times all stages and the library's own
epoch in the same rounds (`python -m experiments.benchmark --breakdown`).

The stages are plain JAX on the library's parameters and pieces
(`keep_mask`, `contrastive_loss`, `make_optimizer`, `gather_batch`), not
flax modules, so that each adds exactly one thing. The last stage is a
whole step; a test checks that, without dropout, it computes what
`train_chunk` computes.
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from siamese_jax.core.config import Config
from siamese_jax.losses import contrastive_loss, euclidean_distance, pair_accuracy
from siamese_jax.models.dropout import keep_mask
from siamese_jax.sampling.pairs import gather_batch
from siamese_jax.training import TrainState, make_optimizer, train_epoch

# The stages, in order; each has everything the ones before it have.
MATMULS, BIAS_RELU, DROPOUT, LOSS, RMSPROP, GATHER = range(6)
# What each stage adds to the one before it.
STAGES = (
  "the step's 8 matmuls, tiny plain update (the floor, by autodiff)",
  "+ biases and ReLU",
  "+ dropout masks",
  "+ distance, contrastive loss, accuracy",
  "+ RMSProp instead of the plain update",
  "+ each batch gathered from the uint8 images (a whole step)",
)


def floor_epoch_seconds(
  config: Config, steps: int, *, input_dim: int = 784, repeats: int = 3
) -> float:
  """Seconds for an epoch of the step's matmuls alone: the floor of a step.

  The same `steps` and the same eight matmuls as a training step of the
  MLP on both images at once (2B rows): three forward, three weight
  gradients, and the input gradients of layers 2 and 3, with the same
  shapes, in one `lax.scan`. The weights change every step (a tiny update
  by their gradients), so XLA cannot hoist any matmul out of the loop.
  Nothing else of a step is there: no gather, bias, ReLU, dropout, loss or
  RMSProp. A training epoch cannot be faster than this on the machine, so
  the ratio epoch / floor says how much the rest costs.

  Returns:
    The median over `repeats` timed epochs (after one to compile).
  """
  dims = (input_dim, *config.hidden_sizes)
  keys = jax.random.split(jax.random.key(0), len(dims))
  ws = tuple(
    jax.random.normal(keys[i], (dims[i], dims[i + 1])) * 0.05 for i in range(len(dims) - 1)
  )
  x = jax.random.uniform(keys[-1], (2 * config.batch_size, input_dim))

  @jax.jit
  def epoch(ws, x):
    def body(ws, _):
      hs = [x]
      for w in ws:
        hs.append(hs[-1] @ w)
      g, grads = hs[-1], []
      for i in reversed(range(len(ws))):
        grads.append(hs[i].T @ g)
        if i > 0:
          g = g @ ws[i].T
      return tuple(w - 1e-9 * dw for w, dw in zip(ws, grads[::-1], strict=True)), None

    return jax.lax.scan(body, ws, None, length=steps)[0]

  jax.block_until_ready(epoch(ws, x))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    ws = jax.block_until_ready(epoch(ws, x))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _stage_loss(config: Config, stage: int) -> Callable[..., tuple[Any, Any]]:
  """loss(params, x, y, step_key) -> (loss, (loss, accuracy)) of the step up to `stage`.

  x is float32[2B, H, W], both images of B pairs; y float32[B]; step_key the
  step's dropout key. Before the loss stage the loss is 0.5 * |e|^2, so that
  the gradient flowing back from the embeddings e is e itself, as in the
  floor.
  """
  layers = len(config.hidden_sizes)

  def keep(step_key, i, shape):
    layer_key = jax.random.fold_in(step_key, i)
    if config.dropout_rng == "threefry":
      return jax.random.bernoulli(layer_key, 1.0 - config.dropout, shape)
    return keep_mask(jax.random.bits(layer_key, (), jnp.uint32), shape, config.dropout)

  def embed(params, x, step_key):
    h = x.reshape(x.shape[0], -1)
    for i in range(layers):
      dense = params["encoder"][f"Dense_{i}"]
      h = h @ dense["kernel"]
      if stage >= BIAS_RELU:
        h = h + dense["bias"][None, :]
        if i < layers - 1 or config.final_relu:
          h = jax.nn.relu(h)
      if stage >= DROPOUT and i < layers - 1 and config.dropout > 0:
        h = jnp.where(keep(step_key, i, h.shape), h / (1.0 - config.dropout), 0.0)
    return h

  def loss_fn(params, x, y, step_key):
    e = embed(params, x, step_key)
    if stage < LOSS:  # The floor's cotangent: the gradient flowing back is e itself.
      return 0.5 * jnp.sum(e * e), (jnp.zeros(()), jnp.zeros(()))
    b = y.shape[0]
    d = euclidean_distance(e[:b], e[b:])
    loss = contrastive_loss(d, y, config.margin)
    return loss, (loss, pair_accuracy(d, y, config.threshold))

  return loss_fn


def stage_epoch_fn(config: Config, stage: int) -> Callable[..., tuple[Any, Any, Any]]:
  """A jitted epoch of the built-in MLP's step, built up to `stage`.

  Args:
    config: the run's config (an "mlp" encoder).
    stage: index into `STAGES`; each stage has everything the ones before
      it have.

  Returns:
    epoch(params, opt_state, images, pairs, y, batches, key) ->
    (params, opt_state, {"loss", "accuracy"}: float32[S]), where params is
    the TrainState's tree, opt_state its RMSProp state (returned unchanged
    before the RMSProp stage), images uint8[N, H, W], pairs int32[P, 2],
    y float32[P], batches int32[S, B], key the dropout key. Before the
    gather stage every step takes the epoch's first batch, gathered once,
    as the floor takes one fixed input.
  """
  if not 0 <= stage < len(STAGES):
    raise ValueError(f"stage must be in 0..{len(STAGES) - 1}, got {stage}.")
  if config.encoder != "mlp":
    raise ValueError(f"The breakdown builds the MLP's step; config.encoder is {config.encoder!r}.")
  tx = make_optimizer(config)
  loss_fn = _stage_loss(config, stage)

  @jax.jit
  def epoch(params, opt_state, images, pairs, y, batches, key):
    fixed = gather_batch(images, pairs, y, batches[0])

    def body(carry, step_idx):
      params, opt_state = carry
      step, idx = step_idx
      batch = gather_batch(images, pairs, y, idx) if stage >= GATHER else fixed
      x = jnp.concatenate([batch["x1"], batch["x2"]])
      step_key = jax.random.fold_in(key, step)
      grads, (loss, acc) = jax.grad(loss_fn, has_aux=True)(params, x, batch["y"], step_key)
      if stage >= RMSPROP:
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
      else:
        params = jax.tree.map(lambda p, g: p - 1e-9 * g, params, grads)
      return (params, opt_state), {"loss": loss, "accuracy": acc}

    steps = jnp.arange(batches.shape[0], dtype=jnp.int32)
    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (steps, batches))
    return params, opt_state, metrics

  return epoch


def step_breakdown(
  state: TrainState,
  split: tuple[jax.Array, jax.Array, jax.Array],
  batches: jax.Array,
  key: jax.Array,
  config: Config,
  *,
  chunk_steps: int = 200,
  repeats: int = 3,
  log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
  """Times every stage of `STAGES` and the library's epoch, in the same rounds.

  Each round times one epoch of every stage and one `train_epoch` (the
  production path: flax modules, optax, chunks of `chunk_steps`), in turn,
  so that a slow spell of a shared machine falls on all of them alike.

  Args:
    state: a TrainState of the MLP (not donated: the library's epoch trains
      a copy).
    split: (images, pairs, y) of the training split, on the device.
    batches: int32[S, B] an epoch's batches.
    key: the dropout key.
    config: the config `state` was made from.
    chunk_steps: steps per dispatch of the library's epoch.
    repeats: timed rounds (>= 1), after one round that compiles.
    log: progress printer.

  Returns:
    One row per stage and one for the library's epoch: {"label", "seconds"
    (median over rounds), "over_floor" (seconds / the first stage's),
    "us_per_step_over_floor"}.
  """
  fns = [stage_epoch_fn(config, s) for s in range(len(STAGES))]
  library = jax.tree.map(jnp.copy, state)

  def run_stage(s):
    return fns[s](state.params, state.opt_state, *split, batches, key)

  def run_library():
    nonlocal library
    images, pairs, y = split
    library, _, _ = train_epoch(
      library, images, {"pairs": pairs, "y": y}, batches, key, chunk_steps=chunk_steps
    )
    return library

  runs = [lambda s=s: run_stage(s) for s in range(len(STAGES))] + [run_library]
  for run in runs:  # compile
    jax.block_until_ready(run())
  times = [[] for _ in runs]
  for r in range(repeats):
    for i, run in enumerate(runs):
      t = time.perf_counter()
      jax.block_until_ready(run())
      times[i].append(time.perf_counter() - t)
    log(f"breakdown round {r + 1}/{repeats}: " + ", ".join(f"{t[-1]:.3f}" for t in times))
  labels = list(STAGES)
  labels[DROPOUT] += f" ({config.dropout_rng})"
  labels.append("the library's epoch (flax, optax, train_epoch)")
  seconds = [statistics.median(t) for t in times]
  steps = batches.shape[0]
  return [
    {
      "label": label,
      "seconds": s,
      "over_floor": s / seconds[0],
      "us_per_step_over_floor": (s - seconds[0]) / steps * 1e6,
    }
    for label, s in zip(labels, seconds, strict=True)
  ]


def format_breakdown(rows: list[dict[str, Any]]) -> str:
  width = max(len(r["label"]) for r in rows)
  lines = ["the step built up from its matmuls (one epoch each, same rounds):"]
  for r in rows:
    lines.append(
      f"  {r['label']:<{width}}  {r['seconds']:.3f} s  {r['over_floor']:.3f}x  "
      f"{r['us_per_step_over_floor']:+6.0f} us/step"
    )
  return "\n".join(lines)
