"""What each batch loss costs beside the conv4 step it trains: loss plus mining, forward and backward.

    python -m benchmarks.losses [--rounds 3] [--steps 20] [--classes-per-batch 32 --samples-per-class 4]
        [--proxy-classes 3856]

For every batch loss, in alternating rounds (so that a slow spell of a
shared machine falls on every loss alike):

* `step`: the library's scanned chunk of `--steps` P x K training steps of
  the Omniglot encoder (`conv4` at 64 channels on 28x28, the one
  docs/losses.md's tables were measured on; the preset's other settings with
  that loss), per step;
* `loss`: the loss and its gradient with respect to the P*K embeddings
  alone (its distance matrix, its mining, its reductions), jitted and run
  `--steps` times in one scan on other embeddings each time, per call. A
  proxy loss's also takes the gradient with respect to its `--proxy-classes`
  proxies (3,856: Omniglot's background characters with rotations) and
  applies the run's optimizer update to them.

It prints the medians and `loss / step`, the share of a step the loss
takes (the issue's target: at most 10 % for every loss). Synthetic images:
the times do not depend on the pixels.
"""

import argparse
import dataclasses
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import xla_flags
from siamese_jax.configs import OMNIGLOT
from siamese_jax.losses import BATCH_LOSSES, LEARNED, LOSSES, PROXY_LOSSES
from siamese_jax.sampling.pk import pk_batches, plan_pk
from siamese_jax.training import create_train_state, train_chunk


def main(argv):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.losses", description=__doc__)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--classes-per-batch", type=int, default=32)
  parser.add_argument("--samples-per-class", type=int, default=4)
  parser.add_argument("--proxy-classes", type=int, default=3856)
  args = parser.parse_args(argv)
  p, k = args.classes_per_batch, args.samples_per_class
  n = p * k
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4 * p), k * args.steps // 4 + k).astype(np.int32)
  images = jnp.asarray(rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8))
  plan = plan_pk(labels, None, p, k)
  batches = pk_batches(jax.random.key(0), plan)[: args.steps]
  labels_d = jnp.asarray(labels)
  batch_labels = jnp.repeat(jnp.arange(p, dtype=jnp.int32), k)

  names = [*BATCH_LOSSES, *PROXY_LOSSES]
  # One blank image a class: the proxies' shape is what the timing needs.
  c = args.proxy_classes
  proxy_classes = (np.zeros((c, 28, 28), np.uint8), np.arange(c))
  runners = {}
  for name in names:
    # The step docs/losses.md's tables were measured on: 64 channels, 28x28.
    config = dataclasses.replace(OMNIGLOT, loss=name, sampler="pk", classes_per_batch=p,
                                 samples_per_class=k, hidden_sizes=(128,),
                                 image_size=28)  # fmt: skip
    state = create_train_state(jax.random.key(0), config, classes=proxy_classes)
    params = LOSSES[name].params(config)
    # The proxies, updated by the run's optimizer: a host copy (the step donates the state).
    own = jax.tree.map(np.array, state.params[LEARNED]) if LEARNED in state.params else None
    runners[name] = (state, _loss_runner(LOSSES[name].fn, params, own, state.tx, batch_labels,
                                         args.steps))  # fmt: skip

  embeddings = jax.random.normal(jax.random.key(1), (n, OMNIGLOT.hidden_sizes[-1]))
  times = {name: {"step": [], "loss": []} for name in names}
  states = {}
  for r in range(args.rounds + 1):  # round 0 compiles
    for name, (state, losses) in runners.items():
      state = states.get(name, state)
      t0 = time.perf_counter()
      state, m = train_chunk(
        state,
        images,
        {"labels": labels_d},
        batches,
        jnp.int32(0),
        jax.random.key(2),
        length=args.steps,
      )
      jax.block_until_ready(m)
      t1 = time.perf_counter()
      jax.block_until_ready(losses(embeddings))
      t2 = time.perf_counter()
      states[name] = state
      if r:
        times[name]["step"].append((t1 - t0) / args.steps)
        times[name]["loss"].append((t2 - t1) / args.steps)
  print(f"P x K = {p} x {k} = {n} images, conv4 28x28, {args.steps} steps per chunk, "
        f"median of {args.rounds} rounds, {jax.devices()[0].platform}")  # fmt: skip
  print("| loss | step ms | loss + mining ms (fwd + bwd) | loss / step |")
  print("| --- | --- | --- | --- |")
  for name in names:
    step = statistics.median(times[name]["step"]) * 1e3
    loss = statistics.median(times[name]["loss"]) * 1e3
    print(f"| {name} | {step:.1f} | {loss:.2f} | {100 * loss / step:.1f} % |")
  return 0


def _loss_runner(loss, params, own, tx, labels, steps):
  """A jitted scan of `steps` calls of the loss and its gradient (and the proxies' update)."""
  if own is None:

    @jax.jit
    def losses(e):
      def body(total, i):
        value, grad = jax.value_and_grad(loss)(e + i * 1e-3, labels, **params)
        return total + value + grad[0, 0], None

      return jax.lax.scan(body, 0.0, jnp.arange(steps, dtype=jnp.float32))[0]

    return losses

  @jax.jit
  def proxy_losses(e):
    def body(carry, i):
      total, mine, opt_state = carry
      f = lambda e, mine: loss(e, labels, **mine[LEARNED], **params)  # noqa: E731
      value, (grad, grads) = jax.value_and_grad(f, argnums=(0, 1))(e + i * 1e-3, mine)
      updates, opt_state = tx.update(grads, opt_state, mine)
      mine = jax.tree.map(jnp.add, mine, updates)
      return (total + value + grad[0, 0], mine, opt_state), None

    mine = {LEARNED: own}
    carry = (0.0, mine, tx.init(mine))
    return jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.float32))[0][0]

  return proxy_losses


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(main(sys.argv[1:]))
