"""Which models a run trains, and how their states stack along a model axis.

K >= 1 models: every seed of `--seeds` crossed with every value of
`--sweep` (learning rate or margin). Model i is exactly its own single
run; stacking only lets one program train them all. Files go to the
workdir (a plain run), `<workdir>/seed_<S>/`, or
`<workdir>/<field>_<value>/seed_<S>/`.
"""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from siamese_jax.core.config import SWEEPABLE, Config
from siamese_jax.core.errors import ConfigError
from siamese_jax.losses import LOSSES
from siamese_jax.sampling import check
from siamese_jax.training.state import TrainState, make_optimizer


@dataclasses.dataclass(frozen=True)
class Plan:
  """The models of a run (one config each), their directories, the sweep, and whether they stack."""

  configs: tuple[Config, ...]
  dirs: tuple[str, ...]
  sweep: tuple[str, tuple[float, ...]] | None
  stacked: bool

  @property
  def size(self) -> int:
    return len(self.configs)

  def describe(self) -> str:
    """`2 seeds x 3 values of margin`, for the console."""
    seeds = len({c.seed for c in self.configs})
    what = f"{seeds} seed{'s' if seeds != 1 else ''}"
    if self.sweep is not None:
      what += f" x {len(self.sweep[1])} values of {self.sweep[0]}"
    return what


def plan_models(
  config: Config,
  workdir: str,
  seeds: Sequence[int] | None = None,
  sweep: tuple[str, Sequence[float]] | None = None,
) -> Plan:
  """The run's models; ConfigError for repeated seeds or values, or an unsweepable one."""
  check(config)
  if seeds is None and sweep is None:
    return Plan((config,), (workdir,), None, stacked=False)
  seeds = [config.seed] if seeds is None else list(seeds)
  if len(seeds) == 0 or len(set(seeds)) != len(seeds):
    raise ConfigError(f"--seeds must list distinct seeds, got {seeds}.")
  if sweep is None:
    configs = [dataclasses.replace(config, seed=s) for s in seeds]
    return Plan(tuple(configs), tuple(seed_dir(workdir, s) for s in seeds), None, stacked=True)
  field, values = sweep[0], tuple(sweep[1])
  if field not in SWEEPABLE:
    raise ConfigError(f"--sweep {field}=...: only {' and '.join(SWEEPABLE)} can be swept.")
  if len(values) == 0 or len(set(values)) != len(values):
    raise ConfigError(f"--sweep {field}= must list distinct values, got {list(values)}.")
  if field == "margin" and LOSSES[config.loss].fields.get("margin") != "margin":
    users = [name for name, loss in LOSSES.items() if loss.fields.get("margin") == "margin"]
    raise ConfigError(
      f"--sweep margin=...: --loss {config.loss} does not use --margin (only "
      f"{' and '.join(users)} do). Sweep the learning rate, or run one model per value."
    )
  configs = [dataclasses.replace(config, seed=s, **{field: v}) for v in values for s in seeds]
  dirs = [
    seed_dir(os.path.join(workdir, f"{field}_{value_name(getattr(c, field))}"), c.seed)
    for c in configs
  ]
  return Plan(tuple(configs), tuple(dirs), (field, values), stacked=True)


def value_name(value: float) -> str:
  """A swept value's folder name: `:g` where that round-trips, else `repr`."""
  short = f"{value:g}"
  return short if float(short) == value else repr(float(value))


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


class SweepTrainState(TrainState):
  """A TrainState whose margin is a traced leaf per model (the rate: `inject_hyperparams`)."""

  margin: jax.Array = flax.struct.field(pytree_node=True, default=1.0)


def sweep_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
  # Only the learning rate is injected: injecting the others as well (RMSProp's
  # decay and eps, Adam's betas) changes the rounding, and a model would no
  # longer equal its run.
  return optax.inject_hyperparams(
    lambda learning_rate: make_optimizer(config, learning_rate, steps_per_epoch)
  )(learning_rate=config.learning_rate)


def to_sweep_state(state: TrainState, config: Config, tx) -> SweepTrainState:
  """A single-run state as a model of a sweep: its lr and margin become leaves."""
  opt_state = tx.init(state.params)
  opt_state = opt_state._replace(
    hyperparams={"learning_rate": jnp.asarray(config.learning_rate, jnp.float32)}
  )
  return SweepTrainState(
    step=state.step, apply_fn=state.apply_fn, params=state.params, tx=tx,
    opt_state=opt_state, margin=jnp.asarray(state.margin, jnp.float32),
    threshold=state.threshold, augment_strength=state.augment_strength, loss=state.loss,
    loss_params=state.loss_params,
  )  # fmt: skip


def to_single_state(state, template: TrainState) -> TrainState:
  """One model of a stacked state as its single run's TrainState (static parts from `template`)."""
  opt_state = state.opt_state.inner_state if isinstance(state, SweepTrainState) else state.opt_state
  return template.replace(step=state.step, params=state.params, opt_state=opt_state)


def stack(trees: Sequence[Any]) -> Any:
  """[tree, ...] -> one tree with a leading model axis, in the first tree's structure."""
  leaves = [jax.tree.leaves(t) for t in trees]
  stacked = [np.stack([np.asarray(x) for x in xs]) for xs in zip(*leaves, strict=True)]
  return jax.tree.unflatten(jax.tree.structure(trees[0]), stacked)


def unstack(tree: Any, i: int) -> Any:
  """The i-th model of a stacked tree of host arrays."""
  return jax.tree.map(lambda x: np.asarray(x[i]), tree)
