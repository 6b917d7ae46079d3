"""Data parallelism over every device of the job, through `jax.sharding`.

One 1-D mesh over the devices (of every process), axis "data". Parameters,
optimizer state and the dataset are replicated; each batch's rows (pair or
image indices) are split along the mesh, so every device gathers and processes its share of the batch. The
training code does not change: `train_step` and `train_chunk` are the same
jitted functions, and XLA's SPMD partitioner inserts the all-reduce that
averages the gradients. With one device this is exactly the single-device
program.

Several processes: `siamese_jax.core.distributed.initialize` first; the mesh then
spans every process's devices, and `to_host` fetches replicated results.
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
  """Places host arrays (the same in every process) on every device of the mesh.

  `make_array_from_process_local_data` rather than `device_put`, so the same
  call also works when the mesh spans several processes (multi-host): each
  process supplies its identical copy for its own devices.
  """
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
  """Host numpy copies of a tree of replicated arrays, also across processes.

  `jax.device_get` refuses arrays that span several processes (not fully
  addressable). Every array fetched here is replicated (parameters,
  per-step metrics, validation results), so this process's own copy is the
  whole value.
  """

  def one(x):
    if isinstance(x, jax.Array):
      if not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
      return np.asarray(x)
    return x

  return jax.tree.map(one, tree)


def chunked_rows(fn, n: int, chunk: int, out_shape, out_dtype=None):
  """out[i] = fn(rows)[i - start] over row windows [start, start + chunk).

  Windows start at 0, chunk, 2 * chunk, ...; the last one is clamped to end
  at n (dynamic_slice clamps), so it overlaps the one before and rewrites a
  few rows with the same values. Nothing of size n is padded or copied, so
  the working set stays one window.

  Args:
    fn: (start, size) -> one window's rows (an array, or a tree of them).
    n: rows in all.
    chunk: rows per window.
    out_shape, out_dtype: one row's shape and dtype; or, with out_dtype
      None, a tree of `jax.ShapeDtypeStruct`, one row of each output.
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
