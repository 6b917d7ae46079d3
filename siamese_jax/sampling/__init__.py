"""What a step learns from: pairs as indices (`pairs.py`) or P x K batches (`pk.py`).

`SAMPLERS` holds one `Sampler` entry each; `check(config)` holds the rules
between a run's loss, its sampler and their fields.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.losses import LOSSES
from siamese_jax.sampling import pairs, pk
from siamese_jax.sampling.feed import Feed


def _pair_distances(apply_fn, variables, batch, *, train: bool, rngs=None) -> jax.Array:
  """float[B]: the distance of each pair's embeddings."""
  return apply_fn(variables, batch["x1"], batch["x2"], train=train, rngs=rngs)


def _embeddings(apply_fn, variables, batch, *, train: bool, rngs=None) -> jax.Array:
  """float[N, D]: each image's embedding."""
  return apply_fn(variables, batch["x"], train=train, rngs=rngs, method="encode")


@dataclasses.dataclass(frozen=True)
class Sampler:
  """One way of drawing batches, as the training core sees it.

  Attributes:
    describe, rows: its batches in words; what their rows are ("pairs" or "images").
    images: the batch's keys holding images (distorted together).
    target: the batch's key the loss compares the outputs with.
    outputs: `outputs(apply_fn, variables, batch, *, train, rngs)` for the loss.
    gather: `gather(images, data, idx) -> batch`, on the device.
    feed: `feed(config, run) -> Feed`: images, epoch tables, the jittable epoch.
    validation: `validation(config, split, key) -> (data, int32[S, B])`,
      the batches validated on each epoch, drawn once.
    val_outputs: `val_outputs(embeddings, data, idx) -> (outputs, targets)`
      of one validation batch, from the split's embeddings.
    fields: the Config fields only this sampler reads.
    rule: `rule(config)` -> (field, what is wrong and the fix) or None.
  """

  describe: str
  rows: str
  images: tuple[str, ...]
  target: str
  outputs: Callable[..., jax.Array]
  gather: Callable[..., dict]
  feed: Callable[..., Feed]
  validation: Callable[..., tuple[dict, Any]]
  val_outputs: Callable[..., tuple[jax.Array, jax.Array]]
  fields: tuple[str, ...]
  rule: Callable[[Config], tuple[str, str] | None] | None = None


def _pairs_rule(config: Config) -> tuple[str, str] | None:
  if config.negatives == "any" or config.pairs == "fresh":
    return None
  return "negatives", "negatives from within a group are drawn with fresh pairs; add --pairs fresh"


# By the name `--sampler` gives.
SAMPLERS: dict[str, Sampler] = {
  "pairs": Sampler(
    "pairs", "pairs", ("x1", "x2"), "y", _pair_distances,
    lambda images, data, idx: pairs.gather_batch(images, data["pairs"], data["y"], idx),
    pairs.feed, pairs.validation, pairs.val_outputs, ("batch_size", "pairs", "negatives"),
    _pairs_rule,
  ),
  "pk": Sampler(
    "P x K batches", "images", ("x",), "labels", _embeddings,
    lambda images, data, idx: pk.gather_images(images, data["labels"], idx),
    pk.feed, pk.validation, pk.val_outputs,
    ("classes_per_batch", "samples_per_class", "group_batches", "rotations"),
  ),
}  # fmt: skip


def sampler_name(config: Config) -> str:
  """The sampler the run uses: `config.sampler`, or its loss's own."""
  return config.sampler if config.sampler is not None else LOSSES[config.loss].sampler


def check(config: Config) -> None:
  """ConfigError for an unknown or mismatched loss or sampler, another's field, or a broken rule."""

  def need(ok: bool, field: str, rule: str) -> None:
    if not ok:
      raise ConfigError(f"Config.{field}={getattr(config, field)!r} is invalid: {rule}.")

  need(config.loss in LOSSES, "loss", f"it must be one of {', '.join(LOSSES)}")
  need(
    config.sampler is None or config.sampler in SAMPLERS,
    "sampler",
    f"it must be one of {', '.join(SAMPLERS)}",
  )
  loss, name = LOSSES[config.loss], sampler_name(config)
  own = SAMPLERS[loss.sampler]
  need(
    name == loss.sampler,
    "sampler",
    f"--loss {config.loss} learns from {own.describe} (--sampler {loss.sampler}); use that "
    "--sampler, or leave it out",
  )
  defaults = Config()
  for other, sampler in SAMPLERS.items():
    for field in sampler.fields if other != name else ():
      need(
        getattr(config, field) == getattr(defaults, field),
        field,
        f"--{field.replace('_', '-')} sets the {other} sampler, and --loss {config.loss} "
        f"learns from {own.describe} (--sampler {name}); leave it out",
      )
  for rule in (SAMPLERS[name].rule, loss.rule):
    broken = rule(config) if rule is not None else None
    if broken is not None:
      need(False, *broken)


# The optimizers' own fields (`Config.optimizer`).
OPTIMIZER_FIELDS = {"rmsprop": ("rmsprop_decay", "rmsprop_eps"), "adam": ("weight_decay",)}


def unused_fields(config: Config) -> dict[str, str]:
  """The Config fields this run never reads, each with why (the CLI refuses those the user gave)."""
  loss = LOSSES[config.loss]
  name = sampler_name(config)
  unused = {}
  for field in {f for other in LOSSES.values() for f in other.config_fields}:
    if field not in loss.config_fields:
      users = [n for n, other in LOSSES.items() if field in other.config_fields]
      unused[field] = (
        f"it sets --loss {' and '.join(users)}, and --loss {config.loss} has no use for it"
      )
  for other, sampler in SAMPLERS.items():
    for field in sampler.fields if other != name else ():
      unused[field] = (
        f"it sets the {other} sampler, and --loss {config.loss} learns from "
        f"{SAMPLERS[name].describe} (--sampler {name})"
      )
  for optimizer, fields in OPTIMIZER_FIELDS.items():
    for field in fields if optimizer != config.optimizer else ():
      unused[field] = f"it sets --optimizer {optimizer}, and this run uses {config.optimizer}"
  if config.encoder != "conv4":
    unused["norm_over"] = f"it sets conv4's norms, and this run's encoder is {config.encoder}"
  if config.augment == "none":
    unused["augment_strength"] = "it scales --augment affine, and this run has --augment none"
  return unused
