"""`LOSSES`: every loss a run can train with, one `Loss` entry each.

An entry holds all the training core knows of its loss, so
`siamese_jax.training` never compares a loss's name. A new loss is one
file and one entry here (docs/losses.md shows how; a test adds a toy loss
that way and trains it).
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


# The key of a loss's own parameters in the train state's params.
LEARNED = "loss"


@dataclasses.dataclass(frozen=True)
class Learned:
  """Parameters a loss learns beside the network's (the proxies), as `params[LEARNED]`.

  Trained by the same optimizer at `lr_field` times the learning rate, passed
  to the loss as keywords, and left out of the model `load_trained` gives.
  `init(class_means float[C, D]) -> {keyword: array}` starts them from each
  training class's mean unit embedding under the fresh network;
  `stand_in(embeddings, labels)` replaces them on validation batches, whose
  classes were never trained, and may renumber the labels ("labels").
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
    fn: `fn(outputs, targets, **params) -> float[]`: pair distances float[B]
      and labels float[B] (1.0 = same), or embeddings float[N, D] and int[N]
      labels, as its sampler says.
    sampler: "pairs" or "pk".
    fields: `fn`'s keyword -> the Config field (and flag) setting it.
      "margin" lives in the state, so `--sweep margin` varies it per model.
    accuracy: `accuracy(outputs, targets, threshold) -> float[]`, in training.
    normalize: the model outputs unit embeddings, so every distance it is
      judged by is the one the loss trained.
    pair_metrics: the original's pair figures describe this loss, and the
      results lead with them; else one-shot and retrieval figures do.
    rule: `rule(config)` -> (field, what is wrong and the fix) or None.
    learned: the parameters it learns beside the network's, if any.
    classes_per_batch: P of its P x K batches where the config leaves it None.
  """

  fn: Callable[..., jax.Array]
  sampler: str
  fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
  accuracy: Callable[[jax.Array, jax.Array, float], jax.Array] = batch_accuracy
  normalize: bool = False
  pair_metrics: bool = False
  rule: Callable[[Config], tuple[str, str] | None] | None = None
  learned: Learned | None = None
  classes_per_batch: int = 32

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
  # On unit embeddings, more classes a batch make its hardest negatives so hard
  # that shrinking every distance lowers the loss: at 16 or 32 the embeddings
  # collapse on Omniglot, at 8 they learn (docs/losses.md).
  "triplet-hard": Loss(
    triplet_batch_hard_loss, "pk", {"margin": "triplet_margin"}, normalize=True,
    classes_per_batch=8,
  ),  # fmt: skip
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
