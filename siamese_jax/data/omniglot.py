"""Omniglot in its official layout: background alphabets to train, evaluation ones to test.

Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): 1,623 characters of 50
alphabets, each drawn by 20 people, 105x105 1-bit PNGs, black on white:

    DIR/images_background/<Alphabet>/characterNN/<IIII>_<DD>.png
    DIR/images_evaluation/<Alphabet>/characterNN/<IIII>_<DD>.png

each as a folder or the official zip. The training split is the 30
background alphabets (964 characters), the test split the 20 evaluation
ones (659). Labels number characters over both splits, `groups` the
alphabets, `drawers` are DD - 1. Images stay as shipped (0 ink, 255
paper); the run chooses size and polarity (`siamese_jax.data.preprocess`).
"""

import os
import re
import sys
import time
from typing import NamedTuple

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.archive import Archive
from siamese_jax.data.dataset import Dataset
from siamese_jax.data.images import decode

SPLITS = ("images_background", "images_evaluation")
_FILE = re.compile(r"^(\d{4})_(\d{2})\.png$")
OMNIGLOT_IMAGE_SIZE = 105  # every Omniglot image, and every image of the official runs


def is_omniglot_dir(path: str) -> bool:
  """Whether `path` is a folder holding either Omniglot split, folder or zip."""
  return os.path.isdir(path) and any(
    os.path.exists(os.path.join(path, s)) or os.path.exists(os.path.join(path, s + ".zip"))
    for s in SPLITS
  )


def open_split(root: str, split: str) -> Archive:
  """One split's files, from its folder or its official zip (which holds the folder)."""
  folder, archive = os.path.join(root, split), os.path.join(root, split + ".zip")
  if os.path.isdir(folder):
    return Archive(folder)
  if not os.path.isfile(archive):
    raise DataError(
      f"{root}: holds neither {split}/ nor {split}.zip. An Omniglot folder needs both "
      f"images_background and images_evaluation, each as the official folder or zip "
      f"(https://github.com/brendenlake/omniglot, python/)."
    )
  zipped = Archive(
    archive,
    prefix=split + "/",
    fix=f"Download the official {split}.zip again, or unzip it into {folder}/.",
  )
  names = [n for n in zipped.stored_names() if n.endswith(".png")]
  outside = [n for n in names if not n.startswith(zipped.prefix)]
  if outside or not names:
    raise DataError(
      f"{archive}: its PNGs should lie under the folder {zipped.prefix} as in the official zip, "
      f"but {'it holds none' if not names else repr(outside[0]) + ' does not'}. Use the "
      f"official {split}.zip."
    )
  return zipped


class Split(NamedTuple):
  """One split as read: images and, per image, its character, alphabet and drawer."""

  images: np.ndarray  # uint8[N, 105, 105], 0 ink, 255 paper
  labels: np.ndarray  # int32[N] characters, numbered from the split's first class
  groups: np.ndarray  # int32[N] alphabets, numbered from the split's first group
  drawers: np.ndarray  # int32[N] drawers 0..19
  alphabets: list[str]  # the names of the split's alphabets, in group order
  characters: list[tuple[str, str]]  # (alphabet, characterNN) of each of its labels, in order

  @property
  def num_classes(self) -> int:
    return len(self.characters)


def _read_split(tree: Archive, first_class: int, first_group: int, progress: bool) -> Split:
  """One split's images, characters, alphabets, drawers and alphabet names."""
  entries = []  # (alphabet, character folder, drawer, relative path)
  for rel in (n for n in tree.names() if n.endswith(".png")):
    parts = rel.split("/")
    m = _FILE.match(parts[-1])
    if len(parts) != 3 or m is None:
      raise DataError(
        f"{tree.path}: {rel!r} does not follow the layout <Alphabet>/characterNN/IIII_DD.png. "
        "Use the official Omniglot folders or zips."
      )
    entries.append((parts[0], parts[1], int(m.group(2)) - 1, rel))
  if not entries:
    raise DataError(f"{tree.path}: holds no PNGs. Use the official Omniglot folders or zips.")
  alphabets = sorted({e[0] for e in entries})
  characters = sorted({(e[0], e[1]) for e in entries})
  char_id = {c: i for i, c in enumerate(characters)}
  alpha_id = {a: i for i, a in enumerate(alphabets)}
  n = len(entries)
  images = np.empty((n, OMNIGLOT_IMAGE_SIZE, OMNIGLOT_IMAGE_SIZE), np.uint8)
  t0, shown = time.perf_counter(), 0.0
  for i, (_, _, _, rel) in enumerate(entries):
    images[i] = _decode(tree.read(rel), f"{tree.path}: {rel}")
    now = time.perf_counter()
    if progress and now - shown > 2:
      eta = (now - t0) / (i + 1) * (n - i - 1)
      print(f"\rreading {tree.path}: {i + 1}/{n}, about {eta:.0f} s left", end="",
            file=sys.stderr, flush=True)  # fmt: skip
      shown = now
  if progress and shown:
    done = f"\rreading {tree.path}: {n}/{n} in {time.perf_counter() - t0:.0f} s"
    print(f"{done:<{len(done) + 20}}", file=sys.stderr)  # over the longer line before
  labels = np.array([first_class + char_id[(e[0], e[1])] for e in entries], np.int32)
  groups = np.array([first_group + alpha_id[e[0]] for e in entries], np.int32)
  drawers = np.array([e[2] for e in entries], np.int32)
  return Split(images, labels, groups, drawers, alphabets, characters)


def _decode(data: bytes, name: str) -> np.ndarray:
  """uint8[105, 105] of an Omniglot PNG, 0 ink and 255 paper; DataError if not so."""
  pixels = decode(data, name, mode="L")
  if pixels.shape != (OMNIGLOT_IMAGE_SIZE, OMNIGLOT_IMAGE_SIZE):
    raise DataError(
      f"{name}: {pixels.shape[1]}x{pixels.shape[0]} pixels, but Omniglot's images are "
      f"{OMNIGLOT_IMAGE_SIZE}x{OMNIGLOT_IMAGE_SIZE}. Replace it with the official file."
    )
  return pixels


def read_splits(path: str, progress: bool) -> tuple[Split, Split]:
  """The background and evaluation sets, both opened (and so checked) before either is read."""
  trees = [open_split(path, s) for s in SPLITS]
  train = _read_split(trees[0], 0, 0, progress)
  return train, _read_split(trees[1], train.num_classes, len(train.alphabets), progress)


def load_omniglot(path: str | os.PathLike, *, progress: bool = True) -> Dataset:
  """Omniglot's background (train) and evaluation (test) alphabets as a `Dataset`.

  `path` holds images_background and images_evaluation (folders or zips).
  Raises DataError for a missing split or a file that breaks the layout.
  """
  train, test = read_splits(os.fspath(path), progress)
  return Dataset(
    train.images, train.labels, test.images, test.labels, source=path,
    train_groups=train.groups, test_groups=test.groups, train_drawers=train.drawers,
    test_drawers=test.drawers, group_names=tuple(train.alphabets + test.alphabets),
  )  # fmt: skip
