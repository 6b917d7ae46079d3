"""The run configuration: one frozen dataclass, validated on construction.

Defaults are the original Keras example's (mnist_siamese): batch 128, 20
epochs, RMSprop(lr=1e-3, rho=0.9, epsilon=1e-7), margin 1, dropout 0.1, three
Dense(128, relu) layers. `optax.rmsprop(1e-3, decay=0.9, eps=1e-7)` applies
the same update as Keras 3's RMSprop with these settings, eps inside the
square root: w -= lr * g / sqrt(nu + eps). (Keras 2, which the 2017 example
ran on, added eps outside it, lr * g / (sqrt(nu) + eps); the two differ by
more than 1% only where nu < 5e-6.)

A run writes its config as `config.json` into the workdir; `from_dict` reads
it back and refuses unknown keys, so a typo never silently becomes a default.
"""

import dataclasses
import json
import math
from typing import Any

from siamese_jax.errors import ConfigError

PAIR_MODES = ("fixed", "fresh")
ENCODERS = ("mlp", "cnn", "conv4")
DROPOUT_RNGS = ("hash", "threefry")  # see siamese_jax.dropout
NEGATIVES = ("any", "within-group", "mixed")  # see siamese_jax.pairs.sample_pairs
AUGMENTS = ("none", "affine")  # see siamese_jax.augment
RESIZE_FILTERS = ("box", "bilinear", "lanczos")  # see siamese_jax.preprocess
OPTIMIZERS = ("rmsprop", "adam")


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of one run.

  Attributes:
    seed: root of every random choice (init, pairs, shuffling, dropout).
    epochs: passes over the training pairs.
    batch_size: pairs per optimizer step.
    learning_rate: RMSProp step size.
    rmsprop_decay: RMSProp's moving-average decay (Keras' `rho`).
    rmsprop_eps: RMSProp's epsilon, added to nu inside the square root, as
      Keras 3 and optax do.
    margin: contrastive-loss margin; negatives farther apart cost nothing.
    dropout: dropout rate after each hidden layer but the last.
    hidden_sizes: widths of the Dense+ReLU layers of the shared MLP.
    threshold: distances below it count as "same digit" for accuracy.
    pairs: "fixed" uses the original's pairs for every epoch (shuffled
      each epoch); "fresh" draws new balanced pairs every epoch.
    holdout: training images held out as a validation split (0: none, as
      in the original). With a holdout, per-epoch validation and the choice
      of the decision threshold use it, and the test set is touched only
      at the end.
    final_relu: whether the embedding's last layer has a ReLU (the
      original's does; the 2-D DrLIM map has none).
    encoder: the built-in encoder, "mlp" (the original's) or "cnn"; the
      embedding width is hidden_sizes[-1] for both.
    train_classes: train only on these classes of the training split
      (pairs, fresh pairs and the holdout); None for all of them. At the
      end every test metric is also reported for the test images of these
      classes ("seen") and of the others ("unseen").
    dropout_rng: "hash" (counter-based, fast) or "threefry" dropout masks.
    data: where the training data came from, as given: a directory or
      `.npz` path, or `tfds:<name>`; None for arrays handed over in code.
      Programs that read a finished run (`experiments.embed`, ...) load it
      unless told otherwise. It names the data; it changes no numbers.
    image_size: resize every image to this square size first (None: keep
      the data's size); see `siamese_jax.preprocess`.
    resize_filter: "box", "bilinear" or "lanczos", for image_size.
    invert: use 255 - x, so that dark-on-light drawings become bright ink.
    negatives: where fresh pairs' negatives come from: "any" other class;
      "within-group", another class of the anchor's group (Omniglot: the
      same alphabet, as the one-shot test asks); "mixed", half of each.
    holdout_groups: whole groups (alphabets) of the training split held out
      as the validation split, for model selection on classes never trained
      on (0: none). Exclusive with `holdout`.
    augment: "none", or "affine": random affine distortions of every
      training image inside the step (`siamese_jax.augment`).
    augment_strength: scales the affine ranges (1: Koch et al.'s; 0: none).
    optimizer: "rmsprop" (the original's) or "adam" (optax's defaults
      b1 0.9, b2 0.999, eps 1e-8, at `learning_rate`; the rmsprop_* fields
      are then unused).
  """

  seed: int = 0
  epochs: int = 20
  batch_size: int = 128
  learning_rate: float = 1e-3
  rmsprop_decay: float = 0.9
  rmsprop_eps: float = 1e-7
  margin: float = 1.0
  dropout: float = 0.1
  hidden_sizes: tuple[int, ...] = (128, 128, 128)
  threshold: float = 0.5
  pairs: str = "fixed"
  holdout: int = 0
  final_relu: bool = True
  encoder: str = "mlp"
  train_classes: tuple[int, ...] | None = None
  dropout_rng: str = "hash"
  data: str | None = None
  image_size: int | None = None
  resize_filter: str = "box"
  invert: bool = False
  negatives: str = "any"
  holdout_groups: int = 0
  augment: str = "none"
  augment_strength: float = 1.0
  optimizer: str = "rmsprop"

  def __post_init__(self):
    def need(ok: bool, field: str, rule: str):
      if not ok:
        value = getattr(self, field)
        raise ConfigError(f"Config.{field}={value!r} is invalid: {rule}.")

    def is_int(v):
      return isinstance(v, int) and not isinstance(v, bool)

    def is_real(v):
      return (is_int(v) or isinstance(v, float)) and math.isfinite(v)

    need(is_int(self.seed) and self.seed >= 0, "seed", "it must be an integer >= 0")
    need(is_int(self.epochs) and self.epochs >= 1, "epochs", "it must be an integer >= 1")
    need(
      is_int(self.batch_size) and self.batch_size >= 1,
      "batch_size",
      "it must be an integer >= 1",
    )
    need(
      is_real(self.learning_rate) and self.learning_rate > 0,
      "learning_rate",
      "it must be a finite number > 0",
    )
    need(
      is_real(self.rmsprop_decay) and 0 <= self.rmsprop_decay < 1,
      "rmsprop_decay",
      "it must lie in [0, 1)",
    )
    need(
      is_real(self.rmsprop_eps) and self.rmsprop_eps >= 0,
      "rmsprop_eps",
      "it must be a finite number >= 0",
    )
    need(is_real(self.margin) and self.margin > 0, "margin", "it must be a finite number > 0")
    need(is_real(self.dropout) and 0 <= self.dropout < 1, "dropout", "it must lie in [0, 1)")
    # Accept lists (as JSON gives them) but store a tuple: the dataclass is
    # frozen and hashable, and the model closes over it.
    if isinstance(self.hidden_sizes, list):
      object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
    need(
      isinstance(self.hidden_sizes, tuple)
      and len(self.hidden_sizes) >= 1
      and all(is_int(h) and h >= 1 for h in self.hidden_sizes),
      "hidden_sizes",
      "it must be a non-empty sequence of integers >= 1",
    )
    need(is_real(self.threshold) and self.threshold > 0, "threshold", "it must be a number > 0")
    need(self.pairs in PAIR_MODES, "pairs", f"it must be one of {', '.join(PAIR_MODES)}")
    need(is_int(self.holdout) and self.holdout >= 0, "holdout", "it must be an integer >= 0")
    need(isinstance(self.final_relu, bool), "final_relu", "it must be true or false")
    need(
      self.dropout_rng in DROPOUT_RNGS,
      "dropout_rng",
      f"it must be one of {', '.join(DROPOUT_RNGS)}",
    )
    need(self.data is None or isinstance(self.data, str), "data", "it must be a path or None")
    need(self.encoder in ENCODERS, "encoder", f"it must be one of {', '.join(ENCODERS)}")
    need(
      self.image_size is None or (is_int(self.image_size) and self.image_size >= 8),
      "image_size",
      "it must be an integer >= 8, or None to keep the data's size",
    )
    need(
      self.resize_filter in RESIZE_FILTERS,
      "resize_filter",
      f"it must be one of {', '.join(RESIZE_FILTERS)}",
    )
    need(isinstance(self.invert, bool), "invert", "it must be true or false")
    need(self.negatives in NEGATIVES, "negatives", f"it must be one of {', '.join(NEGATIVES)}")
    need(
      self.negatives == "any" or self.pairs == "fresh",
      "negatives",
      "negatives from within a group are drawn with fresh pairs; add --pairs fresh",
    )
    need(
      is_int(self.holdout_groups) and self.holdout_groups >= 0,
      "holdout_groups",
      "it must be an integer >= 0",
    )
    need(
      not (self.holdout and self.holdout_groups),
      "holdout_groups",
      "hold out either images (--holdout) or whole groups (--holdout-groups), not both",
    )
    need(self.optimizer in OPTIMIZERS, "optimizer", f"it must be one of {', '.join(OPTIMIZERS)}")
    need(self.augment in AUGMENTS, "augment", f"it must be one of {', '.join(AUGMENTS)}")
    need(
      is_real(self.augment_strength) and self.augment_strength >= 0,
      "augment_strength",
      "it must be a finite number >= 0",
    )
    if self.train_classes is not None:
      need(
        isinstance(self.train_classes, tuple | list)
        and all(is_int(c) and c >= 0 for c in self.train_classes)
        and len(set(self.train_classes)) >= 2,
        "train_classes",
        "it must list at least 2 different class ids >= 0",
      )
      # Sorted and unique: 0,1 and 1,0 are the same run.
      object.__setattr__(self, "train_classes", tuple(sorted(set(self.train_classes))))

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
