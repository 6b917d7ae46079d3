"""The train state: parameters, optimizer, and the loss's static settings.

`create_train_state(key, config)` builds the Siamese network (the config's
built-in encoder, or one given), initializes its parameters and the
optimizer: RMSProp as in the Keras original, or Adam. A moving average of
the weights (`--ema-decay`) is the optimizer chain's last link.
"""

import functools
import os
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from siamese_jax.core.config import Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.evaluation.embed import AveragedParams, embed
from siamese_jax.losses import LEARNED, LOSSES
from siamese_jax.losses.batch import normalize
from siamese_jax.losses.proxies import mean_per_class
from siamese_jax.models import Siamese, builtin_encoder


class TrainState(train_state.TrainState):
  """flax's TrainState plus the run's static settings, so `train_step` keeps three arguments."""

  # The loss's "margin" keyword, if its entry (`siamese_jax.losses.LOSSES`)
  # has one: `margin` or `triplet_margin`; a sweep makes it a traced leaf.
  margin: float = flax.struct.field(pytree_node=False, default=1.0)
  threshold: float = flax.struct.field(pytree_node=False, default=0.5)
  # Strength of the random affine distortion of every training image
  # (`siamese_jax.data.augment`); 0: none.
  augment_strength: float = flax.struct.field(pytree_node=False, default=0.0)
  # The loss's name in `siamese_jax.losses.LOSSES`, and its other
  # parameters as ((name, value), ...).
  loss: str = flax.struct.field(pytree_node=False, default="contrastive")
  loss_params: tuple = flax.struct.field(pytree_node=False, default=())


def make_model(
  config: Config, *, encoder: nn.Module | None = None, fuse_branches: bool = True
) -> Siamese:
  """The Siamese network: `encoder`, or the config's built-in one, on both images."""
  if encoder is None:
    encoder = builtin_encoder(config)
  return Siamese(encoder, fuse_branches, normalize=LOSSES[config.loss].normalize)


def loss_settings(config: Config) -> tuple[float, tuple]:
  """(margin, the other parameters) of the config's loss, as the train state holds them."""
  params = LOSSES[config.loss].params(config)
  margin = params.pop("margin", config.margin)
  return margin, tuple(sorted(params.items()))


def make_optimizer(
  config: Config, learning_rate=None, steps_per_epoch: int | None = None
) -> optax.GradientTransformation:
  """The run's optimizer at `learning_rate` (else the config's); a loss's own at its multiple.

  A warm-up or cosine schedule (`Config.lr_schedule`) is planned over the
  run's `epochs * steps_per_epoch` steps, so it needs `steps_per_epoch`.
  """
  lr = config.learning_rate if learning_rate is None else learning_rate
  adam = config.optimizer == "adam"
  learned = LOSSES[config.loss].learned
  decay = adam and config.weight_decay > 0
  schedule = _schedule(config, steps_per_epoch)
  if learned is None and not decay and schedule is None and config.ema_decay == 0:
    # Same update as Keras 3's RMSprop(learning_rate, rho, epsilon): nu starts
    # at zero, and eps is added to nu inside the square root (optax's default,
    # eps_in_sqrt=True); a test pins this.
    rmsprop = functools.partial(optax.rmsprop, decay=config.rmsprop_decay, eps=config.rmsprop_eps)
    return optax.adam(lr) if adam else rmsprop(lr)
  # optax.adam and optax.rmsprop are a scaling then the rate; AdamW's decay
  # (where optax.adamw puts it), the proxies' multiplier and the schedule's
  # factor go between them. Not after: XLA moves a constant rate to the end
  # of a product, and a sweep's model (whose rate is a leaf) would no longer
  # equal its run.
  parts = [
    optax.scale_by_adam()
    if adam
    else optax.scale_by_rms(decay=config.rmsprop_decay, eps=config.rmsprop_eps)
  ]
  if decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if learned is not None:
    parts.append(_scale_loss_updates(getattr(config, learned.lr_field)))
  if schedule is not None:
    parts.append(optax.scale_by_schedule(schedule))
  parts.append(optax.scale_by_learning_rate(lr))
  if config.ema_decay > 0:
    parts.append(_average_params(config.ema_decay))
  return optax.chain(*parts)


def _schedule(config: Config, steps_per_epoch: int | None):
  """The factor in [0, 1] of the rate at each update (a function of its count), or None: constant."""
  if config.lr_schedule == "constant" and config.warmup_epochs == 0:
    return None
  if steps_per_epoch is None:
    raise ValueError(
      f"--lr-schedule {config.lr_schedule} --warmup-epochs {config.warmup_epochs} is planned "
      "over the run's steps: give steps_per_epoch"
    )
  total = config.epochs * steps_per_epoch
  warmup = config.warmup_epochs * steps_per_epoch
  cosine = config.lr_schedule == "cosine"

  def factor(count: jax.Array) -> jax.Array:  # count: int32[], the updates made before this one
    done = count.astype(jnp.float32)
    # The first update moves (1/warmup of the rate), and so does the last (the
    # cosine would reach 0 one update after the run ends).
    rise = jnp.minimum((done + 1) / warmup, 1.0) if warmup else 1.0
    if not cosine:
      return rise
    progress = jnp.clip((done - warmup) / max(total - warmup, 1), 0.0, 1.0)
    return rise * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

  return factor


class _Multiplier(NamedTuple):
  value: jax.Array  # float32[]


def _scale_loss_updates(multiplier: float) -> optax.GradientTransformation:
  """Multiplies the updates of `params[LEARNED]` by `multiplier`, a leaf of the optimizer state."""

  def update(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda u: u * state.value, updates[LEARNED])
    return {**updates, LEARNED: scaled}, state

  return optax.GradientTransformation(
    lambda params: _Multiplier(jnp.asarray(multiplier, jnp.float32)), update
  )


def _average_params(decay: float) -> optax.GradientTransformation:
  """Keeps `decay * average + (1 - decay) * params` of each step's new parameters.

  The last link of the chain, so its updates are final: it passes them on
  unchanged, and training is the run without it. In the optimizer's state,
  the average is saved, restored, stacked and swept with it, and a
  checkpoint needs nothing new; it starts at the initial parameters.
  """

  def update(updates, state, params):
    new = jax.tree.map(
      lambda a, p, u: decay * a + (1 - decay) * (p + u), state.params, params, updates
    )
    return updates, AveragedParams(new)

  return optax.GradientTransformation(
    lambda params: AveragedParams(jax.tree.map(jnp.copy, params)), update
  )


# Arrays the size of the parameters that a step holds: the parameters, their
# gradients, and the optimizer's slots (RMSProp's nu; Adam's mu and nu), and
# with --ema-decay one more, the average.
_PARAMETER_COPIES = {"rmsprop": 3, "adam": 4}


def check_fits(model: nn.Module, config: Config, image_shape: Sequence[int]) -> None:
  """ConfigError, allocating nothing, for images the encoder cannot take or a model too big."""
  dummy = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  try:
    shapes = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, x, train=False)["params"], dummy
    )
  except (ZeroDivisionError, ValueError, TypeError) as e:
    raise ConfigError(
      f"The {config.encoder} encoder cannot take {'x'.join(map(str, image_shape))} images "
      f"({e or type(e).__name__}). Use a larger --image-size (conv4 halves the image four "
      "times: 16 at least)."
    ) from None
  count = sum(x.size for x in jax.tree.leaves(shapes))
  need = 4 * count * (_PARAMETER_COPIES.get(config.optimizer, 4) + (config.ema_decay > 0))
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if need > memory:
    raise ConfigError(
      f"The model would have {count:,} parameters: {need / 2**30:,.1f} GiB with their "
      f"gradients and the optimizer's state, more than this machine's {memory / 2**30:,.0f} "
      "GiB. Use smaller --hidden-sizes."
    )


def create_train_state(
  key: jax.Array,
  config: Config,
  *,
  encoder: nn.Module | None = None,
  image_shape: Sequence[int] = (28, 28),
  fuse_branches: bool = True,
  classes: tuple[np.ndarray, np.ndarray] | int | None = None,
  steps_per_epoch: int | None = None,
) -> TrainState:
  """A TrainState at step 0: the shared encoder's parameters and the optimizer's state.

  `encoder` maps float[N, *image_shape] to float[N, D] as `encoder(x,
  train=...)` (the config's if None). `classes` (uint8 images, int labels in
  [0, C)) start a loss's per-class parameters (`Loss.learned`) at each
  class's mean unit embedding under the initialized network; a count C
  starts them at zeros, a target to restore a checkpoint into.
  `steps_per_epoch` plans a learning-rate schedule (`make_optimizer`).
  """
  model = make_model(config, encoder=encoder, fuse_branches=fuse_branches)
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  check_fits(model, config, image_shape)
  # One compiled program: run eagerly, init compiles each initializer's ops
  # one by one, seconds in a new process (docs/performance.md), for the same
  # values bitwise.
  params = jax.jit(lambda k: model.init(k, dummy, dummy, train=False)["params"])(key)
  learned = LOSSES[config.loss].learned
  if learned is not None:
    if classes is None:
      raise ValueError(
        f"--loss {config.loss} learns a proxy per class: give classes=(images, labels)."
      )
    if isinstance(classes, int):  # shapes only: nothing is embedded, nothing compiled
      out = jax.eval_shape(lambda p: model.apply({"params": p}, dummy, method="embed"), params)
      means = jnp.zeros((classes, out.shape[-1]), jnp.float32)
    else:
      means = class_means(model, params, *classes)
    params = {**params, LEARNED: learned.init(means)}
  margin, loss_params = loss_settings(config)
  state = TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=make_optimizer(config, steps_per_epoch=steps_per_epoch),
    margin=margin,
    threshold=config.threshold,
    augment_strength=config.augment_strength if config.augment == "affine" else 0.0,
    loss=config.loss,
    loss_params=loss_params,
  )
  # `create` starts `step` as a weakly typed Python 0; after one update it is
  # a strong int32 array, and the changed signature would trace the step a
  # second time. Start it as the int32 array it will be.
  return state.replace(step=jnp.zeros((), jnp.int32))


def class_means(model: nn.Module, params, images, labels) -> jax.Array:
  """float32[C, D]: each class's mean unit embedding of uint8[N, H, W] images, int[N] labels."""
  z = normalize(embed(model.apply, params, images))
  return mean_per_class(z, jnp.asarray(labels), int(np.max(labels)) + 1)[0]
