"""Checkpoints: one msgpack file per run, and `Checkpoints`, the one object that manages them.

flax.serialization, not orbax: a state is about 1 MB a model (the MLP's
133,504 parameters, or Conv4's 120,256, and RMSProp's or Adam's
accumulators). One small file written and renamed is atomic, synchronous
and exact, which a bitwise resume needs; orbax's async directories buy
nothing at this size and make "is it complete?" harder.

A `Checkpoint` holds the same fields for one model or K: the state's pytree
(stacked for K), finished epochs, steps of the next and their metrics
float[K, n], the data key's raw bits, each model's metrics.jsonl lines, and
the config (read by `stored_config`, which a resume must match).

The file is a header, the payload's sha256 and the payload, so damage is
found, never loaded. Each save first renames the last checkpoint to
`checkpoint.prev.msgpack`; a resume falls back to it and, every epoch being
keyed, still ends bitwise. `FORMAT` is 2; format 1 (no digest, no lines) is
read in one place, `_payload`.
"""

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence

import flax.serialization
import numpy as np

from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import WorkdirError
from siamese_jax.core.files import RUN_FIX, atomic_write_bytes, atomic_write_json

CHECKPOINT_NAME = "checkpoint.msgpack"
PREVIOUS_NAME = "checkpoint.prev.msgpack"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
FORMAT = 2
_MAGIC = f"siamese_jax checkpoint v{FORMAT} sha256 ".encode()


def write_config(directory: str, config: Config) -> None:
  """A model's config.json: written before a run starts, and again when a resume changes it."""
  atomic_write_json(os.path.join(directory, CONFIG_NAME), config.to_dict(), fix=RUN_FIX)


def has_header(head: bytes) -> bool:
  """Whether a file's first bytes are this project's checkpoint header."""
  return head.startswith(_MAGIC)


@dataclasses.dataclass
class Checkpoint:
  """What a run needs to continue exactly where it stopped."""

  state: object  # TrainState (or K stacked)
  epoch: int  # epochs fully finished (and logged)
  step_in_epoch: int  # steps of epoch `epoch + 1` already taken
  partial_metrics: dict[str, np.ndarray]  # their per-step metrics, float[K, step_in_epoch]
  data_key: np.ndarray  # raw key data of the run's data key(s)
  # Each model's metrics.jsonl lines of epochs 1..epoch, exactly as written
  # (None: a format-1 checkpoint, which did not carry them).
  history: list[list[str]] | None = dataclasses.field(default_factory=list)


def save(workdir: str, ckpt: Checkpoint, config: Config) -> str:
  """Writes `<workdir>/checkpoint.msgpack` atomically, keeping the previous; returns its path."""
  payload = flax.serialization.msgpack_serialize(
    {
      "state": flax.serialization.to_state_dict(parallel.to_host(ckpt.state)),
      "epoch": ckpt.epoch,
      "step_in_epoch": ckpt.step_in_epoch,
      "partial_metrics": {k: np.asarray(v) for k, v in ckpt.partial_metrics.items()},
      "data_key": np.asarray(ckpt.data_key),
      "config": config.to_json(),
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

  With `fall_back`, a newest checkpoint that fails (or is gone) gives way to
  the previous one, said on `out`; a finished model (`load_trained`) never
  falls back. Raises WorkdirError naming each file and what is wrong.
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
  """The config of the newest verifiable checkpoint, or None, whatever config.json says."""
  for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
    try:
      return Config.from_dict(json.loads(_payload(os.path.join(workdir, name))["config"]))
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return None


def _payload(path: str) -> dict:
  """A checkpoint file's contents, its sha256 verified, in the current format's fields."""
  with open(path, "rb") as f:
    raw = f.read()
  version = 1
  if raw.startswith(_MAGIC):
    digest, _, payload = raw[len(_MAGIC) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
      raise ValueError("its sha256 does not match its contents (the file is corrupt)")
    version = FORMAT
  else:  # format 1: no checksum to verify
    payload = raw
  try:
    d = flax.serialization.msgpack_restore(payload)
  except Exception as e:  # msgpack raises several kinds on garbage
    raise ValueError(f"not a readable checkpoint ({type(e).__name__})") from None
  if version == 1:
    d = {"partial_metrics": {}, **d, "history": "null"}
  return d


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
    partial_metrics={k: np.asarray(v) for k, v in d["partial_metrics"].items()},
    data_key=np.asarray(d["data_key"]),
    history=json.loads(d["history"]),
  )


class Checkpoints:
  """A run's checkpoint (in `workdir`) and the files it vouches for in each of `model_dirs`."""

  def __init__(self, workdir: str, config: Config, model_dirs: Sequence[str]):
    self.workdir, self.config, self.dirs = workdir, config, list(model_dirs)

  def exists(self) -> bool:
    return exists(self.workdir)

  def save(self, state, epoch: int, step_in_epoch: int, metrics, history, data_key) -> str:
    """Writes the run's checkpoint; `metrics` float[K, n] of the steps of epoch `epoch + 1`."""
    ckpt = Checkpoint(state, epoch, step_in_epoch, metrics, data_key, history)
    return save(self.workdir, ckpt, self.config)

  def restore(
    self,
    target_state,
    configs: Sequence[Config],
    *,
    rewrite: Sequence[str],
    check: Callable[[Checkpoint], None],
    write: bool = True,
  ) -> Checkpoint | None:
    """The verified checkpoint to resume from, its files made to agree with it; None if none.

    Nothing changes until the checkpoint is read, verified (or fallen back
    from) and accepted by `check`. Then, if `write`, each config.json in
    `rewrite` is written from `configs` and every metrics.jsonl made to hold
    exactly the checkpoint's epochs. Raises WorkdirError when no checkpoint
    verifies, `check` refuses, or a lost epoch line cannot be restored.
    """
    ckpt = load(self.workdir, target_state, fall_back=True) if self.exists() else None
    if ckpt is not None:
      check(ckpt)
      # One model's metrics, as files before [K, n] stored them, read as K = 1.
      k = len(self.dirs)
      ckpt.partial_metrics = {m: v.reshape(k, -1) for m, v in ckpt.partial_metrics.items()}
    if not write:  # the other processes: they never save, so no lines to keep
      if ckpt is not None:
        ckpt.history = [[] for _ in self.dirs]
      return ckpt
    for d, c in zip(self.dirs, configs, strict=True):
      if d in rewrite:
        write_config(d, c)
    history = (ckpt.history if ckpt else None) or [None] * len(self.dirs)
    restored = []
    for i, d in enumerate(self.dirs):
      path = os.path.join(d, METRICS_NAME)
      n, history[i] = reconcile_metrics(path, ckpt.epoch if ckpt else 0, history[i])
      if n:
        restored.append(path)
    if restored:
      print(
        f"note: restored lost epoch lines of {', '.join(restored)} from the checkpoint.",
        file=sys.stderr,
        flush=True,
      )
    if ckpt is not None:
      ckpt.history = history
    return ckpt


def reconcile_metrics(
  path: str, keep_epochs: int, history: list[str] | None
) -> tuple[int, list[str]]:
  """Makes metrics.jsonl hold exactly epochs 1..keep_epochs; returns (lines restored, lines).

  Lines past the checkpoint (written before a kill) go; a kept epoch's line
  that is missing or corrupt is restored from `history`, never dropped.
  Raises WorkdirError when there is no copy (format 1).
  """
  found = {}
  if os.path.exists(path):
    with open(path) as f:
      for number, line in enumerate(f, 1):
        try:
          epoch = json.loads(line)["epoch"]
        except (ValueError, KeyError, TypeError):
          epoch = None  # unreadable: its epoch is found missing below
        if isinstance(epoch, int) and 1 <= epoch <= keep_epochs and line.endswith("\n"):
          found.setdefault(epoch, (number, line))
  if history is not None and len(history) >= keep_epochs:
    want = history[:keep_epochs]
    restored = sum(found.get(e, (0, ""))[1] != want[e - 1] for e in range(1, keep_epochs + 1))
  else:
    missing = [e for e in range(1, keep_epochs + 1) if e not in found]
    if missing:
      raise WorkdirError(
        f"{path} lacks a readable line for epoch {missing[0]} (of the {keep_epochs} the "
        "checkpoint holds), and this checkpoint, written by an older version, carries no "
        "copy to restore it from. Restore the file from a backup, or start over with "
        "--overwrite."
      )
    want, restored = [found[e][1] for e in range(1, keep_epochs + 1)], 0
  atomic_write_bytes(path, "".join(want).encode(), fix=RUN_FIX)
  return restored, want
