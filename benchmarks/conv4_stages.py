"""Where a conv4 step's time goes, stage by stage, and what a bfloat16 step would change.

    python -m benchmarks.conv4_stages [--images 256] [--rounds 3] [--steps 10]

Times, forward and backward together (the gradient of a sum of the stage's
output, so every stage runs as in training), each stage of the Omniglot
encoder (`siamese_jax.models.Conv4`, 28x28, 64 channels) on its own input
shape, in alternating rounds:

* block i's `im2col` (the 3x3 windows), its `matmul` (the Dense layer on the
  windows), its `norm` (LayerNorm and ReLU) and its `pool` (2x2 max);
* `head`: the final Dense to 128;
* `encoder`: the whole encoder at once, and variants of it that cut the
  first block's work (issue 30's list), each against `encoder`:
  `bf16`, every matmul in bfloat16 (this CPU's AVX-512 BF16), float32
  elsewhere; `first_32`, 32 channels in block 0 (`--hidden-sizes
  32,64,64,64,128`); `image_norm`, LayerNorm over each image's whole map
  (H, W and channels) in every block; `pool_first`, block 0 pooled before
  its LayerNorm and ReLU (a different model: the norm sees 14x14);
  `space_to_depth`, 28x28x1 as 14x14x4, block 0 at 14x14 with no pool
  (the same four convolutions and maps from block 1 on). Only `first_32` is
  in the library.

Each stage runs `--steps` times in one scan per call, on other inputs each
time. It prints milliseconds per step and each stage's share of the sum, and
each matmul's GFLOP/s against the machine's float32 matmul rate (a 2048^3
product, measured in the same run): the floor a stage could reach.
"""

import argparse
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax import xla_flags
from siamese_jax.models.layers import max_pool_2x2, patches_3x3


def timed(fn, args, steps):
  """A jitted scan of `steps` forward+backward passes of fn(*args), the gradient
  with respect to every argument (a stage's input and its weights), on inputs
  perturbed each time."""

  @jax.jit
  def run(args):
    def body(total, i):
      moved = (args[0] + i * 1e-3, *args[1:])
      value, grads = jax.value_and_grad(lambda a: jnp.sum(fn(*a)))(moved)
      return total + value + sum(jnp.sum(g.ravel()[:1]) for g in jax.tree.leaves(grads)), None

    return jax.lax.scan(body, 0.0, jnp.arange(steps, dtype=jnp.float32))[0]

  return run


VARIANTS = ("encoder", "bf16", "first_32", "image_norm", "pool_first", "space_to_depth")


class Encoder(nn.Module):
  """`Conv4` (64 channels, 128-d), or one of VARIANTS of it."""

  variant: str = "encoder"

  @nn.compact
  def __call__(self, x):
    v = self.variant
    dtype = jnp.bfloat16 if v == "bf16" else jnp.float32
    x = x[..., None]
    if v == "space_to_depth":  # each 2x2 block of pixels as 4 channels: 28x28x1 -> 14x14x4
      b, h, w, _ = x.shape
      x = x.reshape(b, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(b, h // 2, w // 2, 4)
    for i in range(4):
      width = 32 if v == "first_32" and i == 0 else 64
      x = nn.Dense(width, dtype=dtype)(patches_3x3(x)).astype(jnp.float32)
      norm = nn.LayerNorm(reduction_axes=(1, 2, 3)) if v == "image_norm" else nn.LayerNorm()
      if v == "pool_first" and i == 0:
        x = nn.relu(norm(max_pool_2x2(x)))
      elif v == "space_to_depth" and i == 0:  # already 14x14: no pool
        x = nn.relu(norm(x))
      else:
        x = max_pool_2x2(nn.relu(norm(x)))
    return nn.Dense(128)(x.reshape(x.shape[0], -1))


def main(argv):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.conv4_stages", description=__doc__)
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args(argv)
  n, key = args.images, jax.random.key(0)
  stages, flops = {}, {}
  shape = (n, 28, 28, 1)
  for i in range(4):
    c = shape[-1]
    x = jax.random.uniform(key, shape)
    w = jax.random.normal(key, (9 * c, 64)) * 0.1
    ln = nn.LayerNorm()
    ln_params = ln.init(key, jnp.zeros((1, 64)))
    stages[f"block {i} im2col"] = (timed(patches_3x3, (x,), args.steps), (x,))
    cols = patches_3x3(x)
    stages[f"block {i} matmul"] = (timed(lambda v, w: v @ w, (cols, w), args.steps), (cols, w))
    flops[f"block {i} matmul"] = 3 * 2 * cols.size * 64  # forward, and two products backward
    y = cols @ w
    norm = timed(lambda v, p, ln=ln: nn.relu(ln.apply(p, v)), (y, ln_params), args.steps)
    stages[f"block {i} norm"] = (norm, (y, ln_params))
    stages[f"block {i} pool"] = (timed(max_pool_2x2, (y,), args.steps), (y,))
    shape = (n, shape[1] // 2, shape[2] // 2, 64)
  flat = jax.random.uniform(key, (n, 64 * shape[1] * shape[2]))
  wh = jax.random.normal(key, (flat.shape[1], 128)) * 0.1
  stages["head"] = (timed(lambda v, w: v @ w, (flat, wh), args.steps), (flat, wh))
  images = jax.random.uniform(key, (n, 28, 28))
  for name in VARIANTS:
    model = Encoder(name)
    params = model.init(key, images[:1])
    run = timed(lambda v, p, m=model: m.apply(p, v), (images, params), args.steps)
    stages[name] = (run, (images, params))
  a = jax.random.normal(key, (2048, 2048))
  matmul = jax.jit(lambda a: a @ a)
  times = {name: [] for name in [*stages, "matmul 2048^3"]}
  for r in range(args.rounds + 1):  # round 0 compiles
    for name, (fn, x) in stages.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(x))
      if r:
        times[name].append((time.perf_counter() - t0) / args.steps)
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a))
    if r:
      times["matmul 2048^3"].append(time.perf_counter() - t0)
  med = {name: statistics.median(t) for name, t in times.items()}
  rate = 2 * 2048**3 / med["matmul 2048^3"] / 1e9
  parts = [k for k in stages if k.startswith(("block", "head"))]
  total = sum(med[k] for k in parts)
  print(
    f"{n} images, 28x28, median of {args.rounds} rounds; float32 matmul rate {rate:.0f} GFLOP/s"
  )
  print("| stage (forward + backward) | ms per step | share of the stages | GFLOP/s |")
  print("| --- | --- | --- | --- |")
  for k in parts:
    gf = f"{flops[k] / med[k] / 1e9:.0f}" if k in flops else ""
    print(f"| {k} | {med[k] * 1e3:.1f} | {100 * med[k] / total:.1f} % | {gf} |")
  print(f"| sum of the stages | {total * 1e3:.1f} | 100 % | |")
  for k in VARIANTS:
    print(f"| {k}, whole | {med[k] * 1e3:.1f} | {med[k] / med['encoder']:.2f}x encoder | |")
  return 0


if __name__ == "__main__":
  xla_flags.use_project_defaults()
  sys.exit(main(sys.argv[1:]))
