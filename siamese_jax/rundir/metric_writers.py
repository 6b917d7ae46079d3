"""Where epoch metrics go: one small interface, several sinks (as in clu).

`write_scalars(step, scalars)` takes Python floats. `JsonlWriter` flushes
and fsyncs each line of metrics.jsonl, so a killed run keeps every
finished epoch; `ConsoleWriter`, `TensorBoardWriter` (tensorboardX, no TF)
and `MultiWriter` fan out.
"""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol, TextIO

from siamese_jax.core.files import RUN_FIX, write_error


class MetricWriter(Protocol):
  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

  def close(self) -> None: ...


def jsonl_line(step: int, scalars: Mapping[str, float], key: str = "epoch") -> str:
  """The metrics.jsonl line of one epoch, exactly as written (checkpoints keep copies)."""
  return json.dumps({key: step, **scalars}, sort_keys=False) + "\n"


class JsonlWriter:
  """Appends `{"epoch": step, **scalars}` as one line of JSON."""

  def __init__(self, path: str | os.PathLike, key: str = "epoch"):
    self._path = os.fspath(path)
    self._key = key

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    line = jsonl_line(step, scalars, self._key)
    try:
      with open(self._path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
      # A line cut short by a full disk is restored on --resume (see workdir.py).
      raise write_error(self._path, e, RUN_FIX) from None

  def close(self) -> None:
    pass


class ConsoleWriter:
  """Prints `epoch 3/20  train_loss 0.0301  ...  1.02 s`."""

  def __init__(self, total: int | None = None, stream: TextIO | None = None):
    self._total = total
    self._stream = stream

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    stream = self._stream or sys.stdout
    width = len(str(self._total)) if self._total else 1
    head = f"epoch {step:>{width}}" + (f"/{self._total}" if self._total else "")
    parts = [head]
    for k, v in scalars.items():
      if k.endswith("seconds"):
        parts.append(f"{v:6.2f} s")
      else:
        parts.append(f"{k} {v:.4f}")
    print("  ".join(parts), file=stream, flush=True)

  def close(self) -> None:
    pass


class TensorBoardWriter:
  """TensorBoard event files via tensorboardX, which needs no TensorFlow."""

  def __init__(self, logdir: str | os.PathLike):
    try:
      from tensorboardX import SummaryWriter
    except ImportError as e:
      from siamese_jax.core.errors import ConfigError

      raise ConfigError(
        "TensorBoard logging needs tensorboardX: pip install tensorboardX "
        "(or pip install -e '.[tensorboard]'), or drop --tensorboard."
      ) from e
    self._writer = SummaryWriter(logdir=os.fspath(logdir))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for k, v in scalars.items():
      self._writer.add_scalar(k, v, global_step=step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter:
  def __init__(self, writers: Sequence[MetricWriter]):
    self._writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def close(self) -> None:
    for w in self._writers:
      w.close()
