"""`build_run`: everything a run needs before its first step, in one place.

The loop and the benchmarks all start here, so what they time is what a
run trains: the models, the preprocessed input, each model's checked keys
and splits, its initial state and the placement. Nothing is written.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from siamese_jax.core.config import Config
from siamese_jax.data.dataset import Dataset
from siamese_jax.data.preprocess import preprocess_dataset
from siamese_jax.sampling.splits import RunData, check_data
from siamese_jax.training.ensemble import Plan, plan_models, stack, sweep_optimizer, to_sweep_state
from siamese_jax.training.placement import DataParallel, Placement, Stacked
from siamese_jax.training.state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """A run ready to train: plan, data, each model's data and first state, the placement."""

  plan: Plan
  data: Dataset
  runs: tuple[RunData, ...]
  templates: tuple[TrainState, ...]
  placement: Placement
  initial: Any


def build_run(
  config: Config,
  data: Dataset,
  *,
  workdir: str = "",
  seeds: Sequence[int] | None = None,
  sweep: tuple[str, Sequence[float]] | None = None,
  devices=None,
  encoder=None,
) -> RunSetup:
  """Plans, checks and places a run of one model or many; ConfigError if it does not fit."""
  plan = plan_models(config, workdir, seeds, sweep)
  data = preprocess_dataset(data, config)  # the run's input size and polarity
  runs = tuple(check_data(c, data) for c in plan.configs)
  templates = tuple(
    create_train_state(
      r.keys.init,
      c,
      encoder=encoder,
      image_shape=data.image_shape,
      classes=None if r.pool is None else (r.pool.images, r.pool.labels),
      steps_per_epoch=r.steps,
    )
    for c, r in zip(plan.configs, runs, strict=True)
  )
  if plan.stacked:
    placement = Stacked(plan.configs, runs, templates, devices)
    initial = list(templates)
    if plan.sweep is not None:  # one optimizer; each model's lr is a leaf of its state
      tx = sweep_optimizer(plan.configs[0], runs[0].steps)
      initial = [to_sweep_state(s, c, tx) for s, c in zip(templates, plan.configs, strict=True)]
    initial = stack(initial)
  else:
    placement = DataParallel(config, runs[0], devices)
    initial = templates[0]
  return RunSetup(plan, data, runs, templates, placement, initial)
