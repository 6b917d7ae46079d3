"""Every integer a run turns into a PRNG key or an array index, checked in one place.

Seeds are in [0, MAX_SEED] (`jax.random.key` keeps 32 bits: 2^40 would be
seed 0 again); counts are >= their minimum (a negative slices from the
end); labels are in [0, MAX_CLASSES) (beyond int32 one wraps into another
class). Config, flags and readers all refuse a bad one in one paragraph.
"""

import argparse

import numpy as np

MAX_SEED = 2**32 - 1
MAX_CLASSES = 2**24  # labels 0..MAX_CLASSES-1: a class table of int32 stays under 64 MiB


def is_int(v) -> bool:
  return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_seed(v) -> bool:
  return is_int(v) and 0 <= v <= MAX_SEED


SEED_RULE = (
  f"it must be an integer in [0, {MAX_SEED}]: a JAX key keeps 32 bits, so a larger seed would "
  "repeat a smaller one's run"
)


def seed_arg(text: str) -> int:
  """argparse type for a seed flag."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
  if not is_seed(value):
    raise argparse.ArgumentTypeError(f"{value}: {SEED_RULE}")
  return value


def count_arg(minimum: int = 1):
  """argparse type for a count flag: an integer >= `minimum` (never a slice from the end)."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"{value}: it must be an integer >= {minimum}")
    return value

  return parse


def label_problem(labels: np.ndarray) -> str | None:
  """What is wrong with integer class labels, or None: negative, or too large to index."""
  if len(labels) == 0:
    return None
  low, high = int(labels.min()), int(labels.max())
  if low < 0:
    return f"found label {low}; labels must be class ids 0..C-1. Relabel the classes"
  if high >= MAX_CLASSES:
    return (
      f"found label {high}; class ids must lie below {MAX_CLASSES:,} (each indexes per-class "
      "tables). Relabel the classes densely as 0..C-1"
    )
  return None
