"""Checkpoints: one msgpack file per run, replaced atomically after each save.

Why flax.serialization (msgpack) and not orbax: a training state here is
small (the MLP's 133,504 parameters, or Conv4's 120,256 at Omniglot's
defaults, plus the optimizer's accumulators: about 1 MB a model; a run of
K seeds or sweep values stores K). One small file written to a temporary
name and renamed is atomic, synchronous, and exact for float32 arrays,
which bitwise-identical resumption needs. Orbax's directory layout, async
writes and tensorstore buy nothing at this size and make "is this
checkpoint complete?" a harder question.

A checkpoint holds the TrainState's pytree (params, opt_state, step; with
seeds or a sweep, every model's, stacked), the number of finished epochs
and of finished steps in the current epoch, that epoch's per-step metrics
so far, the data key's raw bits (typed PRNG keys do not serialize, so
`jax.random.key_data` is stored), and the config as JSON. It suits every
encoder and dataset alike: MNIST's and Omniglot's runs store the same fields.
"""

import json
import os
from dataclasses import dataclass

import flax.serialization
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import WorkdirError
from siamese_jax.core.files import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.msgpack"


@dataclass
class Checkpoint:
  """What a run needs to continue exactly where it stopped."""

  state: object  # TrainState
  epoch: int  # epochs fully finished (and logged)
  step_in_epoch: int  # steps of epoch `epoch + 1` already taken
  partial_metrics: dict[str, np.ndarray]  # their per-step metrics
  data_key: np.ndarray  # raw key data of the run's data key
  config: Config


def save(workdir: str, ckpt: Checkpoint) -> str:
  """Writes `<workdir>/checkpoint.msgpack` atomically; returns its path."""
  payload = {
    "state": flax.serialization.to_state_dict(parallel.to_host(ckpt.state)),
    "epoch": ckpt.epoch,
    "step_in_epoch": ckpt.step_in_epoch,
    "partial_metrics": {k: np.asarray(v) for k, v in ckpt.partial_metrics.items()},
    "data_key": np.asarray(ckpt.data_key),
    "config": ckpt.config.to_json(),
  }
  path = os.path.join(workdir, CHECKPOINT_NAME)
  atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))
  return path


def exists(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, CHECKPOINT_NAME))


def load(workdir: str, target_state) -> Checkpoint:
  """Reads the checkpoint into the structure of `target_state`.

  Raises:
    WorkdirError: if the file is unreadable or does not match the model.
  """
  path = os.path.join(workdir, CHECKPOINT_NAME)
  try:
    with open(path, "rb") as f:
      payload = flax.serialization.msgpack_restore(f.read())
    state = flax.serialization.from_state_dict(target_state, payload["state"])
    config = Config.from_dict(json.loads(payload["config"]))
    metrics = {k: np.asarray(v) for k, v in payload.get("partial_metrics", {}).items()}
    return Checkpoint(
      state=state,
      epoch=int(payload["epoch"]),
      step_in_epoch=int(payload["step_in_epoch"]),
      partial_metrics=metrics,
      data_key=np.asarray(payload["data_key"]),
      config=config,
    )
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise WorkdirError(
      f"{path} cannot be read as a checkpoint of this model ({e}). Start a new "
      "run with --overwrite, or pick another --workdir."
    ) from None
