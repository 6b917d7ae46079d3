"""Where a run's models sit on the devices, and how their steps run there.

The loop trains K >= 1 models alike; a placement supplies what differs:

* `DataParallel`: one model. Each batch's rows are split over a 1-D "data"
  mesh of every device of every process, parameters replicated; XLA
  inserts the gradient all-reduce. One device is the single-device program.
* `Stacked`: K models (`--seeds`, `--sweep`), stacked on a leading axis
  over a 1-D "models" mesh. `shard_map` gives each device K / d models: one
  runs the single-run scan, several its `jax.vmap`. No step communicates;
  the loop gathers only metrics, validation scalars and checkpoints.

Both hold on the devices what the sampler's `feed` gives, without asking
which sampler it is. Metrics come back as host arrays [K, n].
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.core.streams import EpochKey, PairsKey
from siamese_jax.evaluation import oneshot
from siamese_jax.evaluation.pairs import embed_images, to_host_scalars
from siamese_jax.sampling import SAMPLERS, sampler_name
from siamese_jax.sampling.splits import RunData
from siamese_jax.training.ensemble import stack, to_single_state, unstack
from siamese_jax.training.state import TrainState
from siamese_jax.training.step import chunk_body, evaluate_batches, train_chunk

MODELS = "models"
VAL_EPISODES = 300


class Placement(Protocol):
  """What the loop needs from a placement: per-model metrics (K = 1 for `DataParallel`)."""

  num_models: int  # K
  devices: int  # devices the models train on
  images: jax.Array  # the training images on the device(s)
  dropout_keys: jax.Array  # the dropout key(s) `train_epoch` passes to the chunk
  chunk_fn: Callable[..., Any]  # the jitted chunk of steps (`train_chunk` or a stacked one)

  # A host state (initial, or a checkpoint's) placed on the device(s).
  def place(self, host_state) -> Any: ...
  # The epoch's data and batches, keyed by the epoch number alone.
  def epoch_inputs(self, epoch: int) -> "EpochInputs": ...
  # A chunk's per-step metrics as host arrays float[K, n].
  def fetch(self, metrics) -> dict[str, np.ndarray]: ...
  # Whether any process raised `flag` (every process stops at the same chunk).
  def agree(self, flag: bool) -> bool: ...
  # The trained state(s) as host arrays.
  def to_host(self, state) -> Any: ...
  # Each model's validation scalars, in metrics.jsonl's order.
  def validate(self, state) -> list[dict[str, float]]: ...
  # Each model's host state as its own single run's TrainState.
  def singles(self, host_state) -> list[Any]: ...
  # The raw bits of the data key(s), which a checkpoint must match.
  def key_bits(self) -> np.ndarray: ...


class EpochInputs(NamedTuple):
  """One epoch's training inputs on the device(s), as the run's sampler draws them."""

  data: dict[str, jax.Array]  # the sampler's named arrays (`Feed.epoch`; with K models, [K, ...])
  batches: jax.Array  # int32[S, B] (or [K, S, B]) each step's rows


def model_mesh(num_models: int, devices=None) -> Mesh:
  """A 1-D mesh over the most devices dividing the model count (3 models on 2 devices use 1)."""
  devices = list(jax.devices() if devices is None else devices)
  d = max(k for k in range(1, len(devices) + 1) if num_models % k == 0)
  return Mesh(np.asarray(devices[:d]), (MODELS,))


def _global(x, sharding: NamedSharding) -> jax.Array:
  """A host array (the same in every process) as a global array with `sharding`."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _local_device():
  return jax.local_devices()[0]


class _Monitor:
  """One model's per-epoch validation: its own loss on its validation batches, and episodes.

  With groups (Omniglot's held-out alphabets) it also scores `VAL_EPISODES`
  20-way 1-shot episodes, drawn once per run: the figure to select by.
  """

  def __init__(self, config: Config, run: RunData):
    m = run.monitor
    key = jax.random.fold_in(run.keys.pairs, PairsKey.VAL_BATCHES)
    data, batches = SAMPLERS[sampler_name(config)].validation(config, m, key)
    self.arrays = jax.device_put((m.images, data, batches), _local_device())
    self.episodes = None
    if m.groups is not None:
      key = jax.random.fold_in(run.keys.pairs, PairsKey.VAL_EPISODES)
      self.episodes = oneshot.episodes(
        key, m.labels, m.groups, m.drawers, ways=20, shots=1, count=VAL_EPISODES
      )

  def __call__(self, state) -> dict[str, float]:
    """Scalars sorted as metrics.jsonl lists them."""
    images, data, batches = self.arrays
    emb = embed_images(state, images)
    val = {}
    if batches.shape[0]:  # a split too small for one batch reports no loss
      val = to_host_scalars(evaluate_batches(state, emb, data, batches))
    if self.episodes is not None:  # None too where no held-out group holds 20 classes
      val["oneshot_20way_1shot"] = float(
        oneshot.episode_accuracy(np.asarray(emb), *self.episodes).mean()
      )
    # Not a metric (metrics.jsonl never sees it): half the widest distance
    # between two validation embeddings is at most this radius.
    radius = float(jnp.max(jnp.linalg.norm(emb - jnp.mean(emb, axis=0, keepdims=True), axis=1)))
    return {**{f"val_{k}": v for k, v in sorted(val.items(), reverse=True)}, RADIUS: radius}


# The key of `_Monitor`'s embedding radius among a model's validation scalars.
RADIUS = "_radius"


def _epoch_keys(data_key, epoch):
  epoch_key = jax.random.fold_in(data_key, epoch)
  return (
    jax.random.fold_in(epoch_key, EpochKey.BATCHES),
    jax.random.fold_in(epoch_key, EpochKey.FRESH_PAIRS),
  )


class DataParallel:
  """One model, each batch split over the devices (see the module docstring)."""

  def __init__(self, config: Config, run: RunData, devices=None):
    self.num_models = 1
    self.mesh = parallel.data_mesh(devices)
    feed = SAMPLERS[sampler_name(config)].feed(config, run)
    parallel.check_batch_size(feed.batch_size, self.mesh)
    self.devices = self.mesh.devices.size
    self._config, self._run = config, run
    self.dropout_keys = run.keys.dropout
    # The tables are arguments of the epoch, not constants of its program.
    self.images, self._tables = parallel.put_replicated((feed.images, feed.tables), self.mesh)
    self._epoch = jax.jit(
      feed.epoch,
      out_shardings=(parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)),
    )
    self._monitor = None
    self.chunk_fn = train_chunk

  def place(self, host_state) -> TrainState:
    return parallel.put_replicated(host_state, self.mesh)

  def epoch_inputs(self, epoch: int):
    """The data and batches of `epoch`, keyed by the epoch number alone."""
    return EpochInputs(*self._epoch(self._tables, *_epoch_keys(self._run.keys.data, epoch)))

  def fetch(self, metrics) -> dict[str, np.ndarray]:
    return {k: v[None] for k, v in parallel.to_host(metrics).items()}

  def agree(self, flag: bool) -> bool:
    return _agree(flag)

  def to_host(self, state) -> Any:
    """The state as host arrays (replicated: this process's copy is the whole)."""
    return parallel.to_host(state)

  def validate(self, state) -> list[dict[str, float]]:
    if self._monitor is None:  # on the device once per run
      self._monitor = _Monitor(self._config, self._run)
    return [self._monitor(self.to_host(state))]

  def singles(self, host_state) -> list[TrainState]:
    return [host_state]

  def key_bits(self) -> np.ndarray:
    return np.asarray(jax.random.key_data(self._run.keys.data))


class Stacked:
  """K models along a sharded model axis (see the module docstring)."""

  def __init__(
    self,
    configs: Sequence[Config],
    runs: Sequence[RunData],
    templates: Sequence[TrainState],
    devices=None,
  ):
    config = configs[0]
    feeds = [SAMPLERS[sampler_name(c)].feed(c, r) for c, r in zip(configs, runs, strict=True)]
    if len({f.static for f in feeds}) > 1:
      raise ConfigError(
        f"With --holdout {config.holdout}, the seeds train on epochs of different shapes "
        f"({'; '.join(f.shape for f in feeds)}), which one program cannot stack.{feeds[0].hint}"
      )
    self.num_models = len(configs)
    self._configs, self._runs, self._templates = list(configs), list(runs), list(templates)
    self.mesh = model_mesh(len(configs), devices)
    self.devices = self.mesh.devices.size
    self._split = NamedSharding(self.mesh, PartitionSpec(MODELS))
    rep = NamedSharding(self.mesh, PartitionSpec())
    # Without a holdout every model trains on the same images: one
    # replicated copy. With one, each model has its own images.
    self._shared = config.holdout == 0
    if self._shared:
      self.images = _global(feeds[0].images, rep)
    else:
      self.images = _global(stack([f.images for f in feeds]), self._split)
    self._tables = jax.tree.map(lambda x: _global(x, self._split), stack([f.tables for f in feeds]))
    self._epoch = feeds[0].epoch  # the same program for every model: their shapes agree

    def bits(name):  # each model's named key, stacked: uint32[K, 2]
      return np.stack([jax.random.key_data(getattr(r.keys, name)) for r in runs])

    self._key_bits = bits("data")
    self.dropout_keys = jax.random.wrap_key_data(_global(bits("dropout"), self._split))
    self._data_keys = jax.random.wrap_key_data(_global(self._key_bits, self._split))
    self._inputs = jax.jit(self._make_inputs, out_shardings=(self._split,) * 2)
    self.chunk_fn = functools.partial(
      train_chunk_stacked, shared_images=self._shared, mesh=self.mesh
    )
    self._monitors = {}

  def _make_inputs(self, data_keys, tables, epoch):
    keys = jax.vmap(lambda k: _epoch_keys(k, epoch))(data_keys)
    return jax.vmap(self._epoch)(tables, *keys)

  def place(self, host_states) -> Any:
    return jax.tree.map(lambda x: _global(x, self._split), host_states)

  def epoch_inputs(self, epoch: int):
    return EpochInputs(*self._inputs(self._data_keys, self._tables, np.int32(epoch)))

  def fetch(self, metrics) -> dict[str, np.ndarray]:
    if jax.process_count() == 1:
      return jax.tree.map(np.asarray, metrics)
    return multihost_utils.process_allgather(metrics, tiled=True)

  def agree(self, flag: bool) -> bool:
    return _agree(flag)

  def to_host(self, states) -> Any:
    """Every model's state on the host (from every process: a collective)."""
    if jax.process_count() == 1:
      return jax.device_get(states)
    return multihost_utils.process_allgather(states, tiled=True)

  def validate(self, states) -> list[dict[str, float]]:
    """Each process validates the models it holds; the scalars are then shared."""
    local = {}
    for i, state in self._local_models(states):
      if i not in self._monitors:  # on the device once per run
        self._monitors[i] = _Monitor(self._configs[i], self._runs[i])
      local[i] = self._monitors[i](to_single_state(state, self._templates[i]))
    if jax.process_count() == 1:
      return [local[i] for i in range(self.num_models)]
    names = list(next(iter(local.values())))
    table = np.zeros((self.num_models, len(names)), np.float64)
    owner = np.zeros((self.num_models,), np.int32)
    for i, scalars in local.items():
      table[i] = [scalars[n] for n in names]
      owner[i] = 1
    tables, owners = multihost_utils.process_allgather((table, owner))
    rows = [tables[int(np.argmax(owners[:, i])), i] for i in range(self.num_models)]
    return [dict(zip(names, map(float, row), strict=True)) for row in rows]

  def _local_models(self, states):
    """(model index, host state) of each model whose shard this process holds."""
    leaves, treedef = jax.tree.flatten(states)
    seen = set()
    for shard_no, shard in enumerate(leaves[0].addressable_shards):
      start = shard.index[0].start or 0
      if start in seen:
        continue
      seen.add(start)
      parts = [np.asarray(leaf.addressable_shards[shard_no].data) for leaf in leaves]
      for j in range(parts[0].shape[0]):
        yield start + j, jax.tree.unflatten(treedef, [p[j] for p in parts])

  def singles(self, host_states) -> list[TrainState]:
    return [to_single_state(unstack(host_states, i), t) for i, t in enumerate(self._templates)]

  def key_bits(self) -> np.ndarray:
    return self._key_bits


def _agree(flag: bool) -> bool:
  """Whether any process raised `flag`: every process must stop at the same chunk."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("length", "shared_images", "mesh"))
def train_chunk_stacked(states, images, data, batches, start, keys, *, length, shared_images, mesh):
  """`train_chunk` for K stacked models over the models mesh; nothing crosses devices.

  `images` is uint8[N, H, W] shared (`shared_images`), or [K, N, H, W] when
  each seed holds out other images; `data`, `batches` int32[K, S, B] and
  `keys` are stacked. Returns (states, {"loss", "accuracy": float32[K, length]}).
  """

  def one(state, images, data, batches, key):
    return chunk_body(state, images, data, batches, start, key, length=length)

  def local(states, images, data, batches, keys):
    if jax.tree.leaves(states)[0].shape[0] == 1:  # one model here: the single-run program
      first = functools.partial(jax.tree.map, lambda x: x[0])
      imgs = images if shared_images else images[0]
      out = one(first(states), imgs, first(data), batches[0], keys[0])
      return jax.tree.map(lambda x: x[None], out)
    in_axes = (0, None if shared_images else 0, 0, 0, 0)
    return jax.vmap(one, in_axes=in_axes)(states, images, data, batches, keys)

  models = PartitionSpec(MODELS)
  image_spec = PartitionSpec() if shared_images else models
  # check_vma=False: `start` and shared images are replicated inputs that
  # the per-device program reads but never varies over.
  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(models, image_spec, models, models, models),
    out_specs=(models, models),
    check_vma=False,
  )(states, images, data, batches, keys)
