"""The run configuration: one frozen dataclass, validated on construction.

Defaults are the Keras example's: batch 128, 20 epochs, RMSprop(1e-3,
rho=0.9, eps=1e-7), margin 1, dropout 0.1, three Dense(128, relu).
`optax.rmsprop` applies Keras 3's update, eps inside the square root (Keras
2, which the 2017 example ran on, added it outside; they differ by over 1%
only where nu < 5e-6). `from_dict` refuses unknown keys, so a typo in a
config.json never becomes a default.
"""

import dataclasses
import json
import math
from typing import Any

from siamese_jax.core.errors import ConfigError
from siamese_jax.core.integers import SEED_RULE, is_seed

PAIR_MODES = ("fixed", "fresh")
ENCODERS = ("mlp", "cnn", "conv4")  # the keys of siamese_jax.models.ENCODERS
DROPOUT_RNGS = ("hash", "threefry")  # see siamese_jax.models.dropout
NEGATIVES = ("any", "within-group", "mixed")  # see siamese_jax.sampling.pairs.sample_pairs
AUGMENTS = ("none", "affine")  # see siamese_jax.data.augment
RESIZE_FILTERS = ("box", "bilinear", "lanczos")  # see siamese_jax.data.preprocess
OPTIMIZERS = ("rmsprop", "adam")
NORM_AXES = ("channels", "image")  # see siamese_jax.models.conv4
LR_SCHEDULES = ("constant", "cosine")  # see siamese_jax.training.state.make_optimizer
SWEEPABLE = ("learning_rate", "margin")  # fields --sweep can vary (traced, one program)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


# A field's rule: (predicate, what the message says the value must be).
INT_GE0 = (lambda v: _is_int(v) and v >= 0, "it must be an integer >= 0")
INT_GE1 = (lambda v: _is_int(v) and v >= 1, "it must be an integer >= 1")
INT_GE2 = (lambda v: _is_int(v) and v >= 2, "it must be an integer >= 2")
POSITIVE = (lambda v: _is_real(v) and v > 0, "it must be a finite number > 0")
NON_NEGATIVE = (lambda v: _is_real(v) and v >= 0, "it must be a finite number >= 0")
UNIT = (lambda v: _is_real(v) and 0 <= v < 1, "it must lie in [0, 1)")
BOOL = (lambda v: isinstance(v, bool), "it must be true or false")
# A name of a table above this layer (`siamese_jax.losses.LOSSES`,
# `siamese_jax.sampling.SAMPLERS`): `siamese_jax.sampling.check` holds it to the table.
NAME = (lambda v: isinstance(v, str) and v != "", "it must be a name")
OPTIONAL_NAME = (lambda v: v is None or NAME[0](v), "it must be a name or None")


def _field(default, doc: str, rule=None, *, choices: tuple[str, ...] | None = None, flag=True):
  """A Config field: default, documentation (a flag's help if `flag`) and rule, written once."""
  if choices is not None:  # a None default means "chosen by another field"
    rule = (
      lambda v: v in choices or (v is None and default is None),
      f"it must be one of {', '.join(choices)}",
    )
  meta = {"doc": doc, "help": doc if flag else None, "choices": choices, "rule": rule}
  return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of one run; each field is documented in itself (`metadata["doc"]`)."""

  seed: int = _field(
    0, "root PRNG seed of every random choice (init, pairs, batches, dropout)", (is_seed, SEED_RULE)
  )
  epochs: int = _field(20, "passes over the training data", INT_GE1)
  batch_size: int = _field(
    128, "pairs per step (the pairs sampler's; a pk batch is P x K images)", INT_GE1
  )
  learning_rate: float = _field(1e-3, "the optimizer's learning rate", POSITIVE)
  rmsprop_decay: float = _field(0.9, "RMSProp decay (Keras' rho)", UNIT)
  rmsprop_eps: float = _field(
    1e-7,
    "RMSProp epsilon, added to nu inside the square root (as Keras 3 and optax do)",
    (
      lambda v: _is_real(v) and v > 0,
      "it must be a finite number > 0: with 0, a weight whose gradient is still 0 divides 0 "
      "by 0 at the first update",
    ),
  )
  margin: float = _field(
    1.0, "contrastive-loss margin: negatives farther apart cost nothing", POSITIVE
  )
  dropout: float = _field(0.1, "dropout rate, after each hidden layer but the last", UNIT)
  hidden_sizes: tuple[int, ...] = _field(
    (128, 128, 128),
    "comma-separated widths: every Dense+ReLU layer of the mlp; the embedding (the last "
    "entry) of the cnn; (embedding,), (channels, embedding) or (4 blocks' channels, "
    "embedding) of conv4",
    (
      lambda v: isinstance(v, tuple) and len(v) >= 1 and all(_is_int(h) and h >= 1 for h in v),
      "it must be a non-empty sequence of integers >= 1",
    ),
  )
  threshold: float = _field(0.5, "distance below which a pair counts as same digit", POSITIVE)
  pairs: str = _field(
    "fixed",
    "fixed: the original's pairs every epoch; fresh: new balanced pairs each epoch",
    choices=PAIR_MODES,
  )
  holdout: int = _field(
    0,
    "training images held out for each epoch's validation and the threshold, so the test "
    "set is touched only at the end (0: none, as the original)",
    INT_GE0,
  )
  final_relu: bool = _field(True, "ReLU on the embedding's last layer", BOOL)
  encoder: str = _field(
    "mlp",
    "the built-in encoder: mlp (the original's), cnn, or conv4 (for Omniglot)",
    choices=ENCODERS,
  )
  train_classes: tuple[int, ...] | None = _field(
    None,
    "train only on these classes, e.g. 0,1,2,3,4; the test metrics are then also reported "
    "for seen and unseen classes (default: all)",
    (
      lambda v: v is None or (all(_is_int(c) and c >= 0 for c in v) and len(set(v)) >= 2),
      "it must list at least 2 different class ids >= 0",
    ),
  )
  norm_over: str = _field(
    "channels",
    "what conv4's LayerNorms normalise over: each pixel's channels, or each image's whole map "
    "(height, width and channels)",
    choices=NORM_AXES,
  )
  dropout_rng: str = _field(
    "hash",
    "dropout masks from a fast counter-based hash, or JAX's threefry",
    choices=DROPOUT_RNGS,
  )
  data: str | None = _field(
    None,
    "where the training data came from, as given (recorded by the programs from --data-dir): "
    "a directory, an .npz path or tfds:<name>; None for arrays handed over in code. Programs "
    "that read a finished run load it; it changes no numbers",
    (lambda v: v is None or isinstance(v, str), "it must be a path or None"),
    flag=False,
  )
  data_fingerprint: str | None = _field(
    None,
    "what the data is (`Dataset.fingerprint`: counts, shapes, a sha256 of the arrays), "
    "recorded by the run; a resumed run is matched to its data by it, not by the path",
    (lambda v: v is None or isinstance(v, str), "it must be a string or None"),
    flag=False,
  )
  image_size: int | None = _field(
    None,
    "resize images to this square size first, or none",
    (
      lambda v: v is None or (_is_int(v) and v >= 8),
      "it must be an integer >= 8, or None to keep the data's size",
    ),
  )
  resize_filter: str = _field(
    "box", "the resampling filter for --image-size", choices=RESIZE_FILTERS
  )
  invert: bool = _field(False, "use 255 - x, so dark-on-light drawings have bright ink", BOOL)
  negatives: str = _field(
    "any",
    "fresh pairs' negatives: from any other class, from the anchor's group (Omniglot: its "
    "alphabet), or mixed, half each",
    choices=NEGATIVES,
  )
  holdout_groups: int = _field(
    0, "whole groups (Omniglot alphabets) held out for validation, not --holdout", INT_GE0
  )
  augment: str = _field(
    "none", "random affine distortion of every training image, on the device", choices=AUGMENTS
  )
  augment_strength: float = _field(
    1.0, "scales the affine distortion's ranges (1: Koch et al.'s)", NON_NEGATIVE
  )
  tta_shift: float = _field(
    0.0,
    "test-time shifts: each image's embedding is averaged over itself and 4 copies moved this "
    "many pixels (of the run's input) up, down, left and right, in the run's final evaluation "
    "and in load_trained; 0: none",
    NON_NEGATIVE,
  )
  tta_turn: float = _field(
    0.0,
    "test-time turns: 2 more views, each image turned this many degrees each way about its "
    "centre, averaged with the shifts' (at most 45); 0: none",
    (lambda v: _is_real(v) and 0 <= v <= 45, "it must be a number of degrees in [0, 45]"),
  )
  optimizer: str = _field(
    "rmsprop",
    "rmsprop (the original's) or adam (optax's b1 0.9, b2 0.999, eps 1e-8), at --learning-rate",
    choices=OPTIMIZERS,
  )
  lr_schedule: str = _field(
    "constant",
    "constant: --learning-rate throughout; cosine: it decays to 0 over the run's steps (after "
    "any warm-up) along half a cosine",
    choices=LR_SCHEDULES,
  )
  warmup_epochs: int = _field(
    0, "epochs over which the learning rate rises linearly from 0 to --learning-rate", INT_GE0
  )
  weight_decay: float = _field(
    0.0,
    "decoupled weight decay (AdamW, --optimizer adam): each step also moves every weight by "
    "-learning rate x this x the weight; 0: none",
    NON_NEGATIVE,
  )
  ema_decay: float = _field(
    0.0,
    "evaluate (each epoch, at the end, and in load_trained) with a moving average of the "
    "parameters: after each step, average = this x average + (1 - this) x parameters; "
    "training is unchanged. 0: none",
    UNIT,
  )

  loss: str = _field(
    "contrastive",
    "contrastive: the original's pair loss; or a batch loss over every pair of a P x K batch "
    "(docs/losses.md)",
    NAME,
  )
  sampler: str | None = _field(
    None,
    "how batches are drawn: pairs, or pk (P classes x K images); by default pairs for "
    "--loss contrastive and pk for the batch losses",
    OPTIONAL_NAME,
  )
  classes_per_batch: int | None = _field(
    None,
    "P, the classes of a pk batch; by default the loss's own: 8 for triplet-hard (at 16 or "
    "32 its embeddings collapse on Omniglot), 32 for the others",
    (lambda v: v is None or INT_GE2[0](v), "it must be an integer >= 2 or None"),
  )
  samples_per_class: int = _field(4, "K, the images of each class in a pk batch", INT_GE2)
  group_batches: bool = _field(
    False, "draw each pk batch's classes from as few groups (Omniglot alphabets) as it can", BOOL
  )
  rotations: bool = _field(
    False, "pk: add each training class's 90/180/270-degree rotations as new classes", BOOL
  )
  triplet_margin: float = _field(
    0.2, "the triplet losses' margin (batch-contrastive's is --margin)", POSITIVE
  )
  ms_alpha: float = _field(2.0, "multi-similarity's positive scale alpha", POSITIVE)
  ms_beta: float = _field(50.0, "multi-similarity's negative scale beta", POSITIVE)
  ms_base: float = _field(0.5, "multi-similarity's similarity offset (lambda)", NON_NEGATIVE)
  ms_epsilon: float = _field(0.1, "multi-similarity's mining slack epsilon", NON_NEGATIVE)
  num_support: int = _field(1, "prototypical's support images per class", INT_GE1)
  temperature: float = _field(0.1, "supcon's temperature", POSITIVE)
  nca_temperature: float = _field(1 / 9, "proxy-nca's temperature", POSITIVE)
  softmax_temperature: float = _field(0.05, "normalized-softmax's temperature", POSITIVE)
  pa_alpha: float = _field(32.0, "proxy-anchor's scale alpha", POSITIVE)
  pa_delta: float = _field(0.1, "proxy-anchor's margin delta", NON_NEGATIVE)
  proxy_scale: float = _field(64.0, "cosface's and arcface's logit scale", POSITIVE)
  cosface_margin: float = _field(0.35, "cosface's cosine margin", NON_NEGATIVE)
  arcface_margin: float = _field(0.5, "arcface's angular margin (radians)", NON_NEGATIVE)
  proxy_lr_multiplier: float = _field(
    100.0, "the proxies' learning rate, as a multiple of --learning-rate", POSITIVE
  )

  def __post_init__(self):
    # Accept lists (as JSON gives them) but store tuples: the dataclass is
    # frozen and hashable, and the model closes over it.
    for name in ("hidden_sizes", "train_classes"):
      if isinstance(getattr(self, name), list | tuple):
        object.__setattr__(self, name, tuple(getattr(self, name)))
    for field in dataclasses.fields(self):
      predicate, rule = field.metadata["rule"]
      self._need(predicate(getattr(self, field.name)), field.name, rule)
    if self.train_classes is not None:  # 0,1 and 1,0 are the same run
      object.__setattr__(self, "train_classes", tuple(sorted(set(self.train_classes))))
    # The rules between fields (those of a loss or a sampler: `siamese_jax.sampling.check`).
    self._need(
      self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
      "warmup_epochs",
      f"it must be fewer than the run's {self.epochs} epochs, so that the rate reaches "
      "--learning-rate",
    )
    self._need(
      self.encoder != "conv4" or len(self.hidden_sizes) in (1, 2, 5),
      "hidden_sizes",
      "conv4 takes (embedding,), (channels, embedding) or one width per block and the "
      "embedding (5 entries), e.g. --hidden-sizes 32,64,64,64,128",
    )
    self._need(
      not (self.holdout and self.holdout_groups),
      "holdout_groups",
      "hold out either images (--holdout) or whole groups (--holdout-groups), not both",
    )

  def _need(self, ok: bool, field: str, rule: str) -> None:
    if not ok:
      raise ConfigError(f"Config.{field}={getattr(self, field)!r} is invalid: {rule}.")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["hidden_sizes"] = list(self.hidden_sizes)
    if self.train_classes is not None:
      d["train_classes"] = list(self.train_classes)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Config":
    """Builds a Config from `to_dict`'s output, refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ConfigError(
        f"Unknown config field(s) {', '.join(unknown)}; known fields are "
        f"{', '.join(sorted(names))}."
      )
    if "dropout_rng" not in d:
      # Runs written before the field existed all used threefry: resuming
      # one must not switch its generator.
      d = {**d, "dropout_rng": "threefry"}
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

  def diff(self, other: "Config") -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ, as {name: (self's, other's)}."""
    a, b = self.to_dict(), other.to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}
