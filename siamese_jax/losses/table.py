"""`LOSSES`: every loss a run can train with, one `Loss` entry each.

An entry carries everything the training core needs to know about its loss,
so `siamese_jax.training` calls through it and never compares a loss's
name: the function, the Config fields that set its parameters (and so its
flags), the sampler it learns from, whether the model normalizes its
output, its in-batch accuracy, and any rule it adds between fields.

A new loss is a file holding its function and one entry here
(docs/losses.md shows one end to end; a test adds a toy loss that way and
trains it).
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax

from siamese_jax.core.config import Config
from siamese_jax.losses.arcface import arcface_loss
from siamese_jax.losses.batch import nearest_neighbour_accuracy
from siamese_jax.losses.batch_contrastive import batch_contrastive_loss
from siamese_jax.losses.contrastive import contrastive_loss, pair_accuracy
from siamese_jax.losses.cosface import cosface_loss
from siamese_jax.losses.multi_similarity import multi_similarity_loss
from siamese_jax.losses.normalized_softmax import normalized_softmax_loss
from siamese_jax.losses.prototypical import prototypical_loss
from siamese_jax.losses.proxies import batch_proxies, init_proxies
from siamese_jax.losses.proxy_anchor import proxy_anchor_loss
from siamese_jax.losses.proxy_nca import proxy_nca_loss
from siamese_jax.losses.supcon import supcon_loss
from siamese_jax.losses.triplet import triplet_batch_hard_loss, triplet_semi_hard_loss


def batch_accuracy(embeddings: jax.Array, labels: jax.Array, threshold: float) -> jax.Array:
  """A batch loss's training accuracy: in-batch precision at 1 (no threshold)."""
  del threshold
  return nearest_neighbour_accuracy(embeddings, labels)


@dataclasses.dataclass(frozen=True)
class Learned:
  """Parameters a loss learns beside the network's (the proxy losses' proxies).

  The train state holds them as `params["loss"]`, trained by the same
  optimizer at `lr_field` times the network's learning rate; the loss gets
  them as keyword arguments. They are not part of the model a user embeds
  with (`siamese_jax.recognition.load_trained` leaves them out).

  Attributes:
    init: `init(class_means) -> {keyword: array}`; class_means float[C, D]
      is each training class's mean unit embedding under the freshly
      initialized network, for the classes a step's labels count
      (rotations each a class).
    stand_in: `stand_in(embeddings, labels) -> {keyword: array}`: what
      replaces them on a validation batch, whose classes the run never
      trained; it may renumber the labels (its "labels").
    lr_field: the Config field of their learning-rate multiplier.
  """

  init: Callable[[jax.Array], dict]
  stand_in: Callable[[jax.Array, jax.Array], dict]
  lr_field: str = "proxy_lr_multiplier"


# One proxy a training class; validated on each batch's class means.
PROXIES = Learned(init_proxies, batch_proxies)


@dataclasses.dataclass(frozen=True)
class Loss:
  """One loss, as the training core sees it.

  Attributes:
    fn: `fn(outputs, targets, **params) -> float[]`. Its sampler says what
      outputs and targets are (`siamese_jax.sampling.SAMPLERS`): the pairs'
      distances float[B] and labels float[B] (1.0 = same class), or
      embeddings float[N, D] and class labels int[N].
    sampler: the name of the sampler it learns from ("pairs" or "pk").
    fields: `fn`'s keyword -> the Config field (and flag) that sets it. A
      keyword "margin" is held by the train state (`TrainState.margin`), so
      that `--sweep margin` can vary it per model when its field is
      `margin`; the others are static.
    accuracy: `accuracy(outputs, targets, threshold) -> float[]`, the
      training accuracy the console and metrics.jsonl report.
    normalize: the model divides each embedding by its norm, so that every
      distance it is judged by (episodes, retrieval, galleries) is the one
      the loss trained.
    pair_metrics: the original's pair figures (the contrastive loss of a
      split's pairs, their accuracy at the fixed --threshold) describe this
      loss's training, and results.json and the console lead with them.
      Otherwise they mean nothing for it, and the run reports its one-shot
      and retrieval figures instead. Every run is validated each epoch on
      its own loss and accuracy (`Sampler.validation`).
    rule: a rule this loss adds between Config fields: `rule(config)` gives
      (field, what is wrong and how to fix it) when broken, else None.
    learned: the parameters it learns beside the network's, if any.
  """

  fn: Callable[..., jax.Array]
  sampler: str
  fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
  accuracy: Callable[[jax.Array, jax.Array, float], jax.Array] = batch_accuracy
  normalize: bool = False
  pair_metrics: bool = False
  rule: Callable[[Config], tuple[str, str] | None] | None = None
  learned: Learned | None = None

  @property
  def config_fields(self) -> tuple[str, ...]:
    """Every Config field this loss reads: its keywords' and its learned parameters'."""
    extra = (self.learned.lr_field,) if self.learned is not None else ()
    return (*self.fields.values(), *extra)

  def params(self, config: Config) -> dict:
    """`fn`'s keyword arguments as `config` sets them."""
    return {name: getattr(config, field) for name, field in self.fields.items()}


def _prototypical_rule(config: Config) -> tuple[str, str] | None:
  if config.samples_per_class > config.num_support:
    return None
  return (
    "num_support",
    f"prototypical needs a query beside the support: --samples-per-class "
    f"({config.samples_per_class}) must exceed --num-support",
  )


# By the name `--loss` gives.
LOSSES: dict[str, Loss] = {
  "contrastive": Loss(
    contrastive_loss, "pairs", {"margin": "margin"}, accuracy=pair_accuracy, pair_metrics=True
  ),
  "batch-contrastive": Loss(batch_contrastive_loss, "pk", {"margin": "margin"}),
  "triplet-hard": Loss(triplet_batch_hard_loss, "pk", {"margin": "triplet_margin"}, normalize=True),
  "triplet-semihard": Loss(triplet_semi_hard_loss, "pk", {"margin": "triplet_margin"}),
  "multi-similarity": Loss(
    multi_similarity_loss, "pk",
    {"alpha": "ms_alpha", "beta": "ms_beta", "base": "ms_base", "epsilon": "ms_epsilon"},
    normalize=True,
  ),
  "prototypical": Loss(
    prototypical_loss, "pk", {"num_support": "num_support"}, rule=_prototypical_rule
  ),
  "supcon": Loss(supcon_loss, "pk", {"temperature": "temperature"}, normalize=True),
  "proxy-nca": Loss(
    proxy_nca_loss, "pk", {"temperature": "nca_temperature"}, normalize=True, learned=PROXIES
  ),
  "proxy-anchor": Loss(
    proxy_anchor_loss, "pk", {"alpha": "pa_alpha", "delta": "pa_delta"}, normalize=True,
    learned=PROXIES,
  ),
  "normalized-softmax": Loss(
    normalized_softmax_loss, "pk", {"temperature": "softmax_temperature"}, normalize=True,
    learned=PROXIES,
  ),
  "cosface": Loss(
    cosface_loss, "pk", {"scale": "proxy_scale", "margin": "cosface_margin"}, normalize=True,
    learned=PROXIES,
  ),
  "arcface": Loss(
    arcface_loss, "pk", {"scale": "proxy_scale", "margin": "arcface_margin"}, normalize=True,
    learned=PROXIES,
  ),
}  # fmt: skip
