"""What an Omniglot training step costs: the convolutions, the augmentation, or the pairs.

    python -m benchmarks.omniglot_step --data-dir DIR [--rounds 3] [--steps 40]
        [--hidden-sizes 32,64,64,64,128]

Builds the pair-loss Omniglot run (`siamese_jax.configs.OMNIGLOT_CONTRASTIVE`, through `build_run`) on the
real data and times, in alternating rounds so that a slow spell of a shared
machine falls on every part alike:

* `step`: the library's scanned chunk of `--steps` training steps with the
  affine augmentation (what an epoch runs);
* `step_no_augment`: the same chunk without it;
* `augment`: the augmentation of one batch's 256 images alone, jitted;
* `pairs`: drawing one epoch's fresh pairs (half within alphabets) and its
  batch order, as each epoch does;
* `step_widths`: the first chunk again with conv4's widths set to
  `--hidden-sizes` (by default a first block of 32 channels instead of 64),
  on the same pairs, for the ratio of the two steps.

It prints the median of each per step (pairs: per epoch, and spread over the
epoch's steps) and the shares of a step.
"""

import argparse
import dataclasses
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import cli, xla_flags
from siamese_jax.configs import OMNIGLOT_CONTRASTIVE
from siamese_jax.data.augment import augment
from siamese_jax.data.load import load_data
from siamese_jax.sampling.pairs import class_index, sample_pairs
from siamese_jax.training import build_run, create_train_state, epoch_batches, train_chunk


def main(argv):
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.omniglot_step", description=__doc__.splitlines()[0]
  )
  parser.add_argument("--data-dir", default=None, help="the Omniglot folder")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument(
    "--hidden-sizes",
    type=cli.int_list,
    default=(32, 64, 64, 64, 128),
    help="conv4's widths for step_widths: 4 blocks' channels and the embedding "
    "(default: %(default)s)",
  )
  args = parser.parse_args(argv)
  config = OMNIGLOT_CONTRASTIVE
  # What a run builds: the preprocessed data, the checked splits, the states.
  setup = build_run(config, load_data(args.data_dir), devices=jax.devices()[:1])
  run = setup.runs[0]
  # The same run with other widths needs only its own state: the data,
  # pairs and placement are the run's.
  other = create_train_state(
    run.keys.init,
    dataclasses.replace(config, hidden_sizes=tuple(args.hidden_sizes)),
    image_shape=setup.data.image_shape,
    steps_per_epoch=run.steps,
  )
  train = run.sets.train
  images = setup.placement.images
  k = len(train.classes)
  index = jax.device_put(class_index(train.labels, k, train.groups))

  @jax.jit
  def draw(key, index):
    pairs, y = sample_pairs(key, None, run.per_epoch, k, index=index, negatives=config.negatives)
    return pairs, y, epoch_batches(jax.random.fold_in(key, 1), run.per_epoch, config.batch_size)

  pairs, y, batches = draw(jax.random.key(0), index)
  # Placed as the loop places them (so a chunk's output has its input's
  # sharding and nothing recompiles), each in arrays of its own: a chunk
  # donates the state it is given. The second is the same state without
  # augmentation (a static field of the state).
  host = jax.device_get(setup.initial)
  states = {
    "step": setup.placement.place(host),
    "step_no_augment": setup.placement.place(host).replace(augment_strength=0.0),
    "step_widths": setup.placement.place(jax.device_get(other)),
  }
  key = run.keys.dropout
  x = jnp.asarray(images[: 2 * config.batch_size], jnp.float32) / 255.0
  aug = jax.jit(lambda key, x: augment(key, x, config.augment_strength))

  def time_chunk(name):
    start = jax.device_put(np.int32(0))
    t = time.perf_counter()
    states[name], m = train_chunk(
      states[name], images, {"pairs": pairs, "y": y}, batches, start, key, length=args.steps
    )
    jax.block_until_ready(m)
    return (time.perf_counter() - t) / args.steps

  def time_augment():
    t = time.perf_counter()
    for i in range(args.steps):
      out = aug(jax.random.key(i), x)
    out.block_until_ready()
    return (time.perf_counter() - t) / args.steps

  def time_pairs():
    t = time.perf_counter()
    jax.block_until_ready(draw(jax.random.key(1), index))
    return (time.perf_counter() - t) / run.steps  # spread over the epoch's steps

  parts = {"step": lambda: time_chunk("step"),
           "step_no_augment": lambda: time_chunk("step_no_augment"),
           "augment": time_augment, "pairs": time_pairs,
           "step_widths": lambda: time_chunk("step_widths")}  # fmt: skip
  for f in parts.values():  # compile and warm up
    f()
  times = {name: [] for name in parts}
  for _ in range(args.rounds):
    for name, f in parts.items():
      times[name].append(f())
  med = {name: statistics.median(ts) for name, ts in times.items()}
  step = med["step"]
  print(
    f"Omniglot pair-loss run (OMNIGLOT_CONTRASTIVE), {run.steps} steps of {config.batch_size} pairs per epoch"
  )
  for name, t in med.items():
    print(f"  {name:16s} {1000 * t:8.1f} ms per step  ({100 * t / step:5.1f}% of a step)")
  print(f"  epoch of steps   {run.steps * step:8.1f} s  ({config.batch_size / step:.0f} pairs/s)")
  widths = ",".join(map(str, args.hidden_sizes))
  print(f"  step_widths is the step with --hidden-sizes {widths}: {med['step_widths'] / step:.2f}x")


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(cli.run_main(main))
