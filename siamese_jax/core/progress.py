"""A one-line progress bar for a running epoch, on stderr.

Drawn in place when stderr is a terminal. When it is not (logs, CI), nothing
is drawn: the per-epoch metrics line is the progress there, and logs stay
free of carriage-return noise.
"""

import sys
import time
from typing import TextIO


class ProgressBar:
  def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool = True):
    self.label = label
    self.total = max(1, total)
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
    self._start = time.perf_counter()

  def update(self, done: int) -> None:
    if not self.tty:
      return  # Non-terminals get the per-epoch line only.
    frac = min(1.0, done / self.total)
    filled = int(30 * frac)
    rate = done / max(1e-9, time.perf_counter() - self._start)
    left = (self.total - done) / rate if rate > 0 else 0.0
    self.stream.write(
      f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} steps"
      f"  {rate:,.0f} steps/s, about {left:.0f} s left\033[K"
    )
    self.stream.flush()

  def close(self) -> None:
    if self.tty:
      self.stream.write("\r\033[K")  # Clear the bar; the epoch line follows.
      self.stream.flush()
