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

**Proof.** The file is a header line, the sha256 of the payload, and the
payload; `load` recomputes the digest, so flipped or missing bytes are
found, never loaded as other weights. Each save first renames the previous
checkpoint to `checkpoint.prev.msgpack`, so a checkpoint that fails
verification leaves the one before it; resuming falls back to it (and, since
every epoch's randomness is keyed by the epoch, still ends bitwise where an
uninterrupted run ends). Files written before checksums existed load
unverified.

**History.** The checkpoint also carries the exact `metrics.jsonl` lines of
every finished epoch (each model's), so a resumed run restores a corrupt or
missing line instead of losing it (`siamese_jax.rundir.workdir.reconcile_metrics`).
"""

import dataclasses
import hashlib
import json
import os
import sys

import flax.serialization
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import WorkdirError
from siamese_jax.core.files import RUN_FIX, atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.msgpack"
PREVIOUS_NAME = "checkpoint.prev.msgpack"
_MAGIC = b"siamese_jax checkpoint v2 sha256 "


def has_header(head: bytes) -> bool:
  """Whether a file's first bytes are this project's checkpoint header."""
  return head.startswith(_MAGIC)


@dataclasses.dataclass
class Checkpoint:
  """What a run needs to continue exactly where it stopped."""

  state: object  # TrainState (or K stacked)
  epoch: int  # epochs fully finished (and logged)
  step_in_epoch: int  # steps of epoch `epoch + 1` already taken
  partial_metrics: dict[str, np.ndarray]  # their per-step metrics
  data_key: np.ndarray  # raw key data of the run's data key
  config: Config
  # Each model's metrics.jsonl lines of epochs 1..epoch, exactly as written;
  # None in checkpoints written before they carried it.
  history: list[list[str]] | None = None


def save(workdir: str, ckpt: Checkpoint) -> str:
  """Writes `<workdir>/checkpoint.msgpack` atomically, keeping the previous one; returns its path."""
  payload = flax.serialization.msgpack_serialize(
    {
      "state": flax.serialization.to_state_dict(parallel.to_host(ckpt.state)),
      "epoch": ckpt.epoch,
      "step_in_epoch": ckpt.step_in_epoch,
      "partial_metrics": {k: np.asarray(v) for k, v in ckpt.partial_metrics.items()},
      "data_key": np.asarray(ckpt.data_key),
      "config": ckpt.config.to_json(),
      "history": json.dumps(ckpt.history or []),
    }
  )
  path = os.path.join(workdir, CHECKPOINT_NAME)
  previous = os.path.join(workdir, PREVIOUS_NAME)

  def keep_the_last():  # the new file is whole by now: a failed write changes nothing
    if os.path.isfile(path):
      os.replace(path, previous)

  digest = hashlib.sha256(payload).hexdigest().encode()
  atomic_write_bytes(
    path, _MAGIC + digest + b"\n" + payload, before_replace=keep_the_last, fix=RUN_FIX
  )
  return path


def exists(workdir: str) -> bool:
  return any(os.path.isfile(os.path.join(workdir, n)) for n in (CHECKPOINT_NAME, PREVIOUS_NAME))


def load(workdir: str, target_state, *, fall_back: bool = False, out=None) -> Checkpoint:
  """Reads and verifies the checkpoint into the structure of `target_state`.

  Args:
    workdir: the run's directory.
    target_state: a state of the run's structure (as initialized).
    fall_back: when the newest checkpoint fails verification (or is gone),
      use the previous one and say so in one line on `out` (stderr). A
      finished run's model (`load_trained`) never falls back.

  Raises:
    WorkdirError: no checkpoint verifies, naming each file and what is wrong.
  """
  names = (CHECKPOINT_NAME, PREVIOUS_NAME) if fall_back else (CHECKPOINT_NAME,)
  problems = []
  for name in names:
    path = os.path.join(workdir, name)
    try:
      ckpt = _read(path, target_state)
    except (OSError, ValueError, KeyError, TypeError) as e:
      problems.append(f"{path}: {e.strerror if isinstance(e, OSError) else e}")
      continue
    if problems:
      print(
        f"note: {problems[0]}; resuming from the previous checkpoint, {name} (epoch "
        f"{ckpt.epoch}, step {ckpt.step_in_epoch}).",
        file=out or sys.stderr,
        flush=True,
      )
    return ckpt
  raise WorkdirError(
    f"No checkpoint in {workdir!r} can be used: {'; '.join(problems)}. Start a new run with "
    "--overwrite (or in another --workdir); nothing was changed in this one."
  )


def stored_config(workdir: str) -> Config | None:
  """The config the run's newest verifiable checkpoint was trained with, or None.

  What the run really is: config.json can be edited or deleted by hand, the
  checkpoint's sha256 says whether it changed.
  """
  for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
    try:
      return Config.from_dict(json.loads(_payload(os.path.join(workdir, name))["config"]))
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return None


def _payload(path: str) -> dict:
  """A checkpoint file's contents, its sha256 verified."""
  with open(path, "rb") as f:
    raw = f.read()
  if raw.startswith(_MAGIC):
    digest, _, payload = raw[len(_MAGIC) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
      raise ValueError("its sha256 does not match its contents (the file is corrupt)")
  else:  # written before checkpoints carried a checksum
    payload = raw
  try:
    return flax.serialization.msgpack_restore(payload)
  except Exception as e:  # msgpack raises several kinds on garbage
    raise ValueError(f"not a readable checkpoint ({type(e).__name__})") from None


def _read(path: str, target_state) -> Checkpoint:
  d = _payload(path)
  try:
    state = flax.serialization.from_state_dict(target_state, d["state"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"it does not hold a state of this model ({e})") from None
  return Checkpoint(
    state=state,
    epoch=int(d["epoch"]),
    step_in_epoch=int(d["step_in_epoch"]),
    partial_metrics={k: np.asarray(v) for k, v in d.get("partial_metrics", {}).items()},
    data_key=np.asarray(d["data_key"]),
    config=Config.from_dict(json.loads(d["config"])),
    history=json.loads(d["history"]) if "history" in d else None,
  )
