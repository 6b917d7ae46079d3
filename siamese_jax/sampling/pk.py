"""The P x K sampler: batches of P distinct classes x K images, an epoch at a time, on the device.

A batch loss learns from every pair of its batch, so a batch needs several
images of each class. An epoch is a pure function of its key (bitwise
reproducible, resumable mid-epoch):

1. Each class's images are shuffled and cut into chunks of K.
2. Round j holds the j-th chunk of every class that has one, in a random
   order; consecutive P chunks form a batch. The classes that end round j
   and share a batch with round j + 1 are drawn last in round j + 1, so no
   batch holds a class twice.
3. With `group_batches`, each round orders its classes by group, so a batch
   takes its classes from as few groups as it can.

Sitting out an epoch (drawn anew each epoch): a class's last `n mod K`
images; the rounds with fewer than P classes left; the last partial batch.
With equal class sizes and K dividing them (Omniglot: 20) only the last
partial batch sits out. `rotations` adds each image turned by 90, 180 and
270 degrees, each rotation of a class a class (and group) of its own.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.core.errors import ConfigError
from siamese_jax.core.streams import PKKey
from siamese_jax.losses import LOSSES
from siamese_jax.sampling.feed import Feed


@dataclasses.dataclass(frozen=True)
class PKPlan:
  """What an epoch of P x K batches is made from: static, from the class sizes.

  `members` int32[C, L] each class's image indices (0-padded), `sizes`
  int32[C], `class_groups` int32[C] (0 without groups), `rounds` taken (each
  of at least P classes), `steps` batches per epoch.
  """

  members: np.ndarray
  sizes: np.ndarray
  class_groups: np.ndarray
  classes_per_batch: int
  samples_per_class: int
  rounds: int
  steps: int
  group_batches: bool

  @property
  def batch_size(self) -> int:
    return self.classes_per_batch * self.samples_per_class

  @property
  def images_per_epoch(self) -> int:
    return self.steps * self.batch_size

  def static(self) -> tuple:
    """What fixes the program's shapes: models stack only if theirs agree."""
    return (self.members.shape, self.classes_per_batch, self.samples_per_class, self.rounds,
            self.steps, self.group_batches)  # fmt: skip


def classes_per_batch(config) -> int:
  """P of the run's P x K batches: `config.classes_per_batch`, or its loss's own."""
  p = config.classes_per_batch
  return p if p is not None else LOSSES[config.loss].classes_per_batch


def plan_pk(
  labels: np.ndarray,
  groups: np.ndarray | None,
  classes_per_batch: int,
  samples_per_class: int,
  *,
  group_batches: bool = False,
) -> PKPlan:
  """The epoch's static structure from int[N] dense labels (and groups), checked.

  Raises ConfigError: P above the classes, K above the smallest class, or
  `group_batches` without groups.
  """
  labels = np.asarray(labels)
  p, k = classes_per_batch, samples_per_class
  num_classes = int(labels.max()) + 1 if len(labels) else 0
  sizes = np.bincount(labels, minlength=num_classes).astype(np.int32)
  if p > num_classes:
    raise ConfigError(
      f"classes_per_batch={p}: the training split has only {num_classes} classes. "
      f"Use --classes-per-batch {num_classes} or fewer."
    )
  smallest = int(sizes.min())
  if k > smallest:
    raise ConfigError(
      f"samples_per_class={k}: class {int(np.argmin(sizes))} has only {smallest} training "
      f"images, and every class must fill a chunk of K. Use --samples-per-class {smallest} "
      "or fewer."
    )
  if group_batches and groups is None:
    raise ConfigError(
      "group_batches draws each batch from few groups (Omniglot's alphabets); this data has "
      "no groups. Leave out --group-batches."
    )
  members = np.zeros((num_classes, int(sizes.max())), np.int32)
  order = np.argsort(labels, kind="stable")
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  for c in range(num_classes):
    members[c, : sizes[c]] = order[starts[c] : starts[c] + sizes[c]]
  class_groups = np.zeros(num_classes, np.int32)
  if groups is not None:
    class_groups[labels] = np.asarray(groups)  # a class lies in one group
  chunks = sizes // k
  counts = np.array([(chunks > j).sum() for j in range(int(chunks.max()))])
  rounds = int(np.sum(counts >= p))  # counts only fall: the rounds kept come first
  steps = int(counts[:rounds].sum()) // p
  return PKPlan(members, sizes, class_groups, p, k, rounds, steps, group_batches)


@dataclasses.dataclass(frozen=True)
class PKPool:
  """What a P x K run trains on: its images (with their rotations, if asked), labels and plan."""

  images: np.ndarray  # uint8[N, H, W]
  labels: np.ndarray  # int32[N] dense class labels
  plan: PKPlan


def make_pool(
  images: np.ndarray,
  labels: np.ndarray,
  groups: np.ndarray | None,
  classes_per_batch: int,
  samples_per_class: int,
  *,
  group_batches: bool = False,
  rotations: bool = False,
) -> PKPool:
  """The training split as the P x K sampler draws from it (see `plan_pk`, `with_rotations`)."""
  if rotations:
    images, labels, groups = with_rotations(images, labels, groups)
  plan = plan_pk(labels, groups, classes_per_batch, samples_per_class, group_batches=group_batches)
  return PKPool(images, np.asarray(labels, np.int32), plan)


def pk_batches(key: jax.Array, plan: PKPlan, members=None, sizes=None, class_groups=None):
  """int32[steps, P * K]: an epoch's batches of image indices, a pure function of `key`.

  Rows hold P classes x K images. Pass `members`, `sizes` and `class_groups`
  as device arrays under jit, so XLA does not embed them as constants.
  """
  members = jnp.asarray(plan.members if members is None else members)
  sizes = jnp.asarray(plan.sizes if sizes is None else sizes)
  class_groups = jnp.asarray(plan.class_groups if class_groups is None else class_groups)
  p, k = plan.classes_per_batch, plan.samples_per_class
  num_classes, width = members.shape

  # 1. Each class's images in a random order (padding last), then cut into K-chunks.
  noise = jax.random.uniform(jax.random.fold_in(key, PKKey.MEMBERS), (num_classes, width))
  noise = jnp.where(jnp.arange(width)[None, :] < sizes[:, None], noise, 2.0)
  shuffled = jnp.take_along_axis(members, jnp.argsort(noise, axis=1), axis=1)
  chunks = sizes // k

  # 2. Rounds: each orders the classes that have a j-th chunk.
  counts = jnp.sum(chunks[None, :] > jnp.arange(plan.rounds)[:, None], axis=1)  # [R]
  ends = jnp.cumsum(counts)
  starts = ends - counts
  # The last `tail` classes of round j share a batch with the start of round j + 1.
  tails = ends % p
  rounds_key = jax.random.fold_in(key, PKKey.ROUNDS)
  groups_key = jax.random.fold_in(key, PKKey.GROUPS)
  iota = jnp.arange(num_classes, dtype=jnp.int32)

  def one_round(last_tail, j):
    absent = (chunks <= j).astype(jnp.int32)
    order_noise = jax.random.uniform(jax.random.fold_in(rounds_key, j), (num_classes,))
    group_noise = jnp.zeros((num_classes,))
    if plan.group_batches:
      num_groups = int(plan.class_groups.max()) + 1
      group_noise = jax.random.uniform(jax.random.fold_in(groups_key, j), (num_groups,))
      group_noise = group_noise[class_groups]
    # Present classes first; among them, last round's tail last; then by group, then at random.
    *_, order = jax.lax.sort(
      (absent, last_tail.astype(jnp.int32), group_noise, order_noise, iota), num_keys=4
    )
    position = jnp.zeros((num_classes,), jnp.int32).at[order].set(iota)
    tail = (position >= counts[j] - tails[j]) & (position < counts[j])
    return tail, order

  _, orders = jax.lax.scan(
    one_round, jnp.zeros((num_classes,), bool), jnp.arange(plan.rounds, dtype=jnp.int32)
  )  # [R, C]

  # 3. The rounds one after another; every P consecutive chunks are a batch.
  used = plan.steps * p
  slot = starts[:, None] + iota[None, :]  # [R, C] each entry's place in the epoch
  slot = jnp.where(iota[None, :] < counts[:, None], slot, used)  # absent: dropped
  rounds = jnp.broadcast_to(jnp.arange(plan.rounds, dtype=jnp.int32)[:, None], orders.shape)
  seq_class = jnp.zeros((used,), jnp.int32).at[slot].set(orders, mode="drop")
  seq_round = jnp.zeros((used,), jnp.int32).at[slot].set(rounds, mode="drop")
  columns = seq_round[:, None] * k + jnp.arange(k, dtype=jnp.int32)[None, :]  # [used, K]
  images = shuffled[seq_class[:, None], columns]
  return images.reshape(plan.steps, p * k)


def with_rotations(
  images: np.ndarray, labels: np.ndarray, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Adds every square image turned by 90, 180 and 270 degrees, each rotation a class of its own.

  Rotation r of image i sits at r * N + i, with label r * C + its class and
  group r * G + its group. Raises ConfigError for images that are not square.
  """
  if images.shape[1] != images.shape[2]:
    raise ConfigError(
      f"rotations need square images; these are {images.shape[1]}x{images.shape[2]}. "
      "Leave out --rotations, or give --image-size."
    )
  num_classes = int(labels.max()) + 1
  images = np.concatenate([np.rot90(images, r, axes=(1, 2)) for r in range(4)])
  labels = np.concatenate([labels + r * num_classes for r in range(4)]).astype(np.int32)
  if groups is not None:
    num_groups = int(groups.max()) + 1
    groups = np.concatenate([groups + r * num_groups for r in range(4)]).astype(np.int32)
  return np.ascontiguousarray(images), labels, groups


def gather_images(images: jax.Array, labels: jax.Array, idx: jax.Array) -> dict[str, jax.Array]:
  """A P x K batch on the device: {"x": float32[B, H, W] in [0, 1], "labels": int32[B]}."""
  return {"x": images[idx].astype(jnp.float32) / 255.0, "labels": labels[idx]}


def feed(config, run) -> Feed:
  """What the P x K sampler trains one model from, its tables as arguments of the epoch."""
  del config  # the pool was made from it (`siamese_jax.sampling.splits.check_data`)
  pool = run.pool
  plan = pool.plan

  def epoch(tables, batch_key, pairs_key):
    del pairs_key  # P x K batches have no pairs
    batches = pk_batches(
      batch_key, plan, tables["members"], tables["sizes"], tables["class_groups"]
    )
    return {"labels": tables["labels"]}, batches

  tables = {"labels": pool.labels, "members": plan.members, "sizes": plan.sizes,
            "class_groups": plan.class_groups}  # fmt: skip
  return Feed(
    pool.images, tables, epoch, plan.batch_size, plan.static(), "P x K epochs of different shapes",
    " Run the seeds one by one, or use --holdout-groups.",
  )  # fmt: skip


def validation(config, split, key) -> tuple[dict, np.ndarray]:
  """P x K batches of the validation split, drawn once by `key`: (data, int32[S, P * K]).

  P and K are cut to what the split holds, over its classes of at least 2
  images; no rotations or grouping; int32[0, 0] if fewer than 2 such classes.
  """
  counts = np.bincount(split.labels)
  classes = np.flatnonzero(counts >= 2)
  data = {"labels": np.asarray(split.labels, np.int32)}
  none = np.zeros((0, 0), np.int32)
  if len(classes) < 2:
    return data, none
  k = min(config.samples_per_class, int(counts[classes].min()))
  p = min(classes_per_batch(config), len(classes))
  kept = np.flatnonzero(np.isin(split.labels, classes))  # the split's images, by position
  dense = np.unique(split.labels[kept], return_inverse=True)[1].astype(np.int32)
  plan = plan_pk(dense, None, p, k)
  if plan.steps == 0:
    return data, none
  return data, kept[np.asarray(pk_batches(key, plan))].astype(np.int32)


def val_outputs(embeddings: jax.Array, data: dict, idx: jax.Array):
  """(float[B, D] embeddings, int32[B] labels) of the batch's images."""
  return embeddings[idx], data["labels"][idx]
