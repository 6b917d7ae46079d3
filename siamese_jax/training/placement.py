"""Where a run's models sit on the devices, and how their steps run there.

The epoch loop (`siamese_jax.training.loop`) trains K >= 1 models the same way
whatever the placement; a placement supplies what differs:

* `DataParallel`: one model (a plain run). Each batch of pair indices is
  split over a 1-D "data" mesh of every device of every process; parameters
  and data are replicated, and XLA's SPMD partitioner inserts the gradient
  all-reduce (`siamese_jax.core.parallel`). One device is exactly the
  single-device program.
* `Stacked`: K models (`--seeds`, `--sweep`). Their states, pairs, batches
  and dropout keys are stacked along a leading model axis, split over a 1-D
  "models" mesh of every device of every process. `shard_map` hands each
  device its K / d models: a device with one model runs exactly the
  single-run scan, a device with several runs its `jax.vmap`. No step
  communicates. Between steps, the loop gathers only what it reports and
  saves: each chunk's per-step metrics (a few hundred floats), each
  epoch's validation scalars, and the states when it writes a checkpoint.

Both hold the training data on the devices and form every batch there.
Metrics come back as host arrays of shape [K, n], whatever the placement.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.core.streams import EpochKey, PairsKey
from siamese_jax.evaluation import oneshot
from siamese_jax.evaluation.pairs import embed_images, evaluate_embedded, to_host_scalars
from siamese_jax.sampling.pairs import class_index, sample_pairs
from siamese_jax.sampling.pk import pk_batches
from siamese_jax.sampling.splits import RunData
from siamese_jax.training.ensemble import stack, to_single_state, unstack
from siamese_jax.training.state import TrainState
from siamese_jax.training.step import chunk_body, epoch_batches, train_chunk

MODELS = "models"
VAL_EPISODES = 300


class Placement(Protocol):
  """What the loop (`siamese_jax.training.loop`) needs from a placement.

  Metrics and validations are per model, K of them (K = 1 for
  `DataParallel`); states are whatever the placement trains (one state, or
  K stacked).
  """

  num_models: int  # K
  devices: int  # devices the models train on
  images: jax.Array  # the training images on the device(s)
  dropout_keys: jax.Array  # the dropout key(s) `train_epoch` passes to the chunk
  chunk_fn: Callable[..., Any]  # the jitted chunk of steps (`train_chunk` or a stacked one)

  # A host state (initial, or a checkpoint's) placed on the device(s).
  def place(self, host_state) -> Any: ...
  # The epoch's pairs, labels and batches, keyed by the epoch number alone.
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
  # Per-step metrics float[K, n] as the checkpoint stores them, and back.
  def checkpoint_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
  def loaded_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
  # The raw bits of the data key(s), which a checkpoint must match.
  def key_bits(self) -> np.ndarray: ...


class EpochInputs(NamedTuple):
  """One epoch's training inputs on the device(s).

  With the pk sampler (a batch loss), `pairs` holds each training image's
  label, int32[N] (or [K, N]), `y` is None, and `batches` index images.
  """

  pairs: jax.Array  # int32[P, 2] (or [K, P, 2]) indices into the images
  y: jax.Array | None  # float32[P] (or [K, P]) pair labels, 1.0 = same class
  batches: jax.Array  # int32[S, B] (or [K, S, B]) pair indices of each step


def model_mesh(num_models: int, devices=None) -> Mesh:
  """A 1-D mesh over the most devices (at most all) that divide the model count.

  Every device then holds the same number of models, and the program stays
  one SPMD program: 3 models on 2 devices use 1, 4 models on 3 use 2.
  """
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
  """One model's per-epoch validation: its split on the device, and its one-shot episodes.

  With groups (Omniglot's held-out background alphabets), the validation
  also scores `VAL_EPISODES` 20-way 1-shot episodes, drawn once per run:
  the figure to select models by, on classes never trained on.
  """

  def __init__(self, run: RunData):
    m = run.monitor
    self.arrays = jax.device_put((m.images, m.pairs, m.y), _local_device())
    self.episodes = None
    if m.groups is not None:
      key = jax.random.fold_in(run.keys.pairs, PairsKey.VAL_EPISODES)
      self.episodes = oneshot.episodes(
        key, m.labels, m.groups, m.drawers, ways=20, shots=1, count=VAL_EPISODES
      )

  def __call__(self, state) -> dict[str, float]:
    """Scalars sorted as metrics.jsonl lists them."""
    images, pairs, y = self.arrays
    emb = embed_images(state, images)
    val = to_host_scalars(evaluate_embedded(state, emb, pairs, y)[0])
    if self.episodes is not None:
      val["oneshot_20way_1shot"] = float(
        oneshot.episode_accuracy(np.asarray(emb), *self.episodes).mean()
      )
    return {f"val_{k}": v for k, v in sorted(val.items(), reverse=True)}


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
    pool = run.pool
    parallel.check_batch_size(
      config.batch_size if pool is None else pool.plan.batch_size, self.mesh
    )
    self.devices = self.mesh.devices.size
    self._run = run
    train = run.sets.train
    self.dropout_keys = run.keys.dropout
    sharded = parallel.batch_sharded(self.mesh)
    if pool is None:
      self.images, self._pairs, self._y = parallel.put_replicated(
        (train.images, train.pairs, train.y), self.mesh
      )
      self._make_batches = jax.jit(
        lambda key: epoch_batches(key, run.num_pairs, config.batch_size), out_shardings=sharded
      )
    else:  # P x K batches of images; the plan's tables are arguments, not constants
      plan = pool.plan
      self.images, self._pairs = parallel.put_replicated((pool.images, pool.labels), self.mesh)
      self._y = None
      tables = parallel.put_replicated((plan.members, plan.sizes, plan.class_groups), self.mesh)
      make = jax.jit(lambda key, t: pk_batches(key, plan, *t), out_shardings=sharded)
      self._make_batches = functools.partial(lambda key, t: make(key, t), t=tables)
    self._fresh = None
    if config.pairs == "fresh":
      rep = parallel.replicated(self.mesh)
      k = len(train.classes)
      index = parallel.put_replicated(class_index(train.labels, k, train.groups), self.mesh)
      neg = config.negatives
      # The class index is an argument, not a closed-over constant, so XLA
      # does not embed a table of every training image in the program.
      sample = jax.jit(
        lambda key, index: sample_pairs(key, None, run.num_pairs, k, index=index, negatives=neg),
        out_shardings=(rep, rep),
      )
      self._fresh = functools.partial(lambda key, index: sample(key, index), index=index)
    self._monitor = None
    self.chunk_fn = train_chunk

  def place(self, host_state) -> TrainState:
    return parallel.put_replicated(host_state, self.mesh)

  def epoch_inputs(self, epoch: int):
    """(pairs, y, batches) of `epoch`, keyed by the epoch number alone."""
    batch_key, pairs_key = _epoch_keys(self._run.keys.data, epoch)
    pairs, y = self._pairs, self._y
    if self._fresh is not None:
      pairs, y = self._fresh(pairs_key)
    return EpochInputs(pairs, y, self._make_batches(batch_key))

  def fetch(self, metrics) -> dict[str, np.ndarray]:
    return {k: v[None] for k, v in parallel.to_host(metrics).items()}

  def agree(self, flag: bool) -> bool:
    return _agree(flag)

  def to_host(self, state) -> Any:
    """The state as host arrays (replicated: this process's copy is the whole)."""
    return parallel.to_host(state)

  def validate(self, state) -> list[dict[str, float]]:
    if self._monitor is None:  # on the device once per run
      self._monitor = _Monitor(self._run)
    return [self._monitor(self.to_host(state))]

  def singles(self, host_state) -> list[TrainState]:
    return [host_state]

  def checkpoint_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[1, n] metrics as a plain run's checkpoint stores them: [n]."""
    return {k: v[0] for k, v in m.items()}

  def loaded_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[None] for k, v in m.items()}

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
    counts = {r.num_pairs for r in runs}
    pools = [r.pool for r in runs]
    if pools[0] is not None and len({p.plan.static() for p in pools}) > 1:
      raise ConfigError(
        f"With --holdout {config.holdout}, the seeds keep different numbers of training images "
        "per class, so their P x K epochs differ in shape and cannot stack in one program. "
        "Run the seeds one by one, or use --holdout-groups."
      )
    if pools[0] is None and len(counts) > 1:
      raise ConfigError(
        f"With --holdout {config.holdout} and fixed pairs, the seeds keep different numbers of "
        f"training pairs ({', '.join(f'{r.num_pairs:,}' for r in runs)}), which one program "
        "cannot stack. Use --pairs fresh (as many pairs for every seed), or run the seeds one "
        "by one."
      )
    self.num_models = len(configs)
    self._runs, self._templates = list(runs), list(templates)
    self.mesh = model_mesh(len(configs), devices)
    self.devices = self.mesh.devices.size
    self._split = NamedSharding(self.mesh, PartitionSpec(MODELS))
    rep = NamedSharding(self.mesh, PartitionSpec())
    sets = [r.sets for r in runs]
    # Without a holdout every model trains on all the training images: one
    # replicated copy. With one, each model has its own images.
    self._shared = config.holdout == 0
    # With P x K batches, the pool's images (the training split, rotated too if asked).
    train_images = [
      s.train.images if p is None else p.images for s, p in zip(sets, pools, strict=True)
    ]
    if self._shared:
      self.images = _global(train_images[0], rep)
    else:
      self.images = _global(stack(train_images), self._split)
    self._pairs = self._y = None
    self._plan = self._tables = None
    if pools[0] is not None:  # each model's labels and plan tables
      self._plan = pools[0].plan
      self._pairs = _global(stack([p.labels for p in pools]), self._split)
      tables = [(p.plan.members, p.plan.sizes, p.plan.class_groups) for p in pools]
      self._tables = jax.tree.map(lambda x: _global(x, self._split), stack(tables))
    elif config.pairs == "fixed":
      self._pairs = _global(stack([s.train.pairs for s in sets]), self._split)
      self._y = _global(stack([s.train.y for s in sets]), self._split)
    self._index = None
    if config.pairs == "fresh":
      index = stack(
        [class_index(s.train.labels, len(s.train.classes), s.train.groups) for s in sets]
      )
      self._index = jax.tree.map(lambda x: _global(x, self._split), index)
    self._num_classes = len(sets[0].train.classes)
    self._num_pairs, self._batch_size = runs[0].num_pairs, config.batch_size
    self._negatives = config.negatives

    def bits(name):  # each model's named key, stacked: uint32[K, 2]
      return np.stack([jax.random.key_data(getattr(r.keys, name)) for r in runs])

    self._key_bits = bits("data")
    self.dropout_keys = jax.random.wrap_key_data(_global(bits("dropout"), self._split))
    self._data_keys = jax.random.wrap_key_data(_global(self._key_bits, self._split))
    self._inputs = jax.jit(self._make_inputs, out_shardings=(self._split,) * 3)
    self.chunk_fn = functools.partial(
      train_chunk_stacked, shared_images=self._shared, mesh=self.mesh
    )
    self._monitors = {}

  def _make_inputs(self, data_keys, index, pairs, y, tables, epoch):
    keys = jax.vmap(lambda k: _epoch_keys(k, epoch))(data_keys)
    if tables is not None:
      plan = self._plan
      return pairs, y, jax.vmap(lambda k, t: pk_batches(k, plan, *t))(keys[0], tables)
    if index is not None:
      n, c = self._num_pairs, self._num_classes
      neg = self._negatives
      pairs, y = jax.vmap(lambda key, idx: sample_pairs(key, None, n, c, index=idx, negatives=neg))(
        keys[1], index
      )
    batches = jax.vmap(lambda k: epoch_batches(k, self._num_pairs, self._batch_size))(keys[0])
    return pairs, y, batches

  def place(self, host_states) -> Any:
    return jax.tree.map(lambda x: _global(x, self._split), host_states)

  def epoch_inputs(self, epoch: int):
    return EpochInputs(
      *self._inputs(
        self._data_keys, self._index, self._pairs, self._y, self._tables, np.int32(epoch)
      )
    )

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
        self._monitors[i] = _Monitor(self._runs[i])
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

  def checkpoint_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return m

  def loaded_metrics(self, m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return m

  def key_bits(self) -> np.ndarray:
    return self._key_bits


def _agree(flag: bool) -> bool:
  """Whether any process raised `flag`: every process must stop at the same chunk."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("length", "shared_images", "mesh"))
def train_chunk_stacked(
  states, images, pairs, y, batches, start, keys, *, length, shared_images, mesh
):
  """`train.train_chunk` for K models at once, split over the models mesh.

  A device with one model runs exactly the single-run scan (the same body,
  unbatched); a device with several vmaps that body over them. Nothing
  crosses devices.

  Args:
    states: stacked TrainState, leading axis K (donated).
    images: uint8[N, H, W] shared by all models, or uint8[K, N, H, W]
      (with a holdout every seed trains on other images).
    pairs: int32[K, P, 2]; y: float32[K, P].
    batches: int32[K, S, B]; start: int32[]; keys: K dropout keys.
    length: steps in this chunk (static).
    shared_images: whether `images` has no model axis (static).
    mesh: the models mesh (static).

  Returns:
    (states, {"loss": float32[K, length], "accuracy": float32[K, length]}).
  """

  def one(state, images, pairs, y, batches, key):
    return chunk_body(state, images, pairs, y, batches, start, key, length=length)

  def local(states, images, pairs, y, batches, keys):
    if jax.tree.leaves(states)[0].shape[0] == 1:  # one model here: the single-run program
      first = functools.partial(jax.tree.map, lambda x: x[0])
      imgs = images if shared_images else images[0]
      labels = None if y is None else y[0]  # None: a batch loss's P x K batches
      out = one(first(states), imgs, pairs[0], labels, batches[0], keys[0])
      return jax.tree.map(lambda x: x[None], out)
    in_axes = (0, None if shared_images else 0, 0, 0, 0, 0)
    return jax.vmap(one, in_axes=in_axes)(states, images, pairs, y, batches, keys)

  models = PartitionSpec(MODELS)
  image_spec = PartitionSpec() if shared_images else models
  # check_vma=False: `start` and shared images are replicated inputs that
  # the per-device program reads but never varies over.
  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(models, image_spec, models, models, models, models),
    out_specs=(models, models),
    check_vma=False,
  )(states, images, pairs, y, batches, keys)
