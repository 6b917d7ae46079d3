"""Data parallelism over every device of the job, through `jax.sharding`.

One 1-D mesh, axis "data", over the devices of every process. Parameters,
optimizer state and data are replicated; each batch's rows are split over
the mesh. `train_step` and `train_chunk` do not change: XLA's SPMD
partitioner inserts the gradient all-reduce. One device is exactly the
single-device program.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax.core.errors import ConfigError

AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (all devices of the job if None)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_replicated(tree, mesh: Mesh):
  """Places identical host arrays on every device, also when the mesh spans processes."""
  sharding = replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)), tree
  )


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """For int32[S, B] batches of an epoch: each device takes B / n of a step."""
  return NamedSharding(mesh, PartitionSpec(None, AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(
      f"batch_size={batch_size} does not split evenly over {n} devices; use a multiple of {n}."
    )


def to_host(tree):
  """Host copies of replicated arrays; `jax.device_get` refuses ones spanning processes."""

  def one(x):
    if isinstance(x, jax.Array):
      if not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
      return np.asarray(x)
    return x

  return jax.tree.map(one, tree)


def chunked_rows(fn, n: int, chunk: int, out_shape, out_dtype=None):
  """out[i] = fn(start, size)[i - start] over windows of `chunk` rows, the working set one window.

  The last window is clamped to end at n (overlapping the one before with
  the same values); nothing of size n is padded. One row's shape and dtype
  are `out_shape`, `out_dtype`, or with `out_dtype` None a tree of
  `jax.ShapeDtypeStruct`.
  """
  chunk = min(chunk, n)
  steps = -(-n // chunk)
  rows = out_shape if out_dtype is None else jax.ShapeDtypeStruct(tuple(out_shape), out_dtype)
  init = jax.tree.map(lambda r: jnp.zeros((n, *r.shape), r.dtype), rows)

  def body(i, out):
    start = jnp.minimum(i * chunk, n - chunk)
    return jax.tree.map(
      lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, start, axis=0), out, fn(start, chunk)
    )

  return jax.lax.fori_loop(0, steps, body, init)
