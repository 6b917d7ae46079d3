"""Omniglot in its official layout: background alphabets to train, evaluation ones to test.

Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) holds 1,623 handwritten
characters of 50 alphabets, each drawn once by 20 people, as 105x105 1-bit
PNGs, black ink on white:

    DIR/images_background/<Alphabet>/characterNN/<IIII>_<DD>.png
    DIR/images_evaluation/<Alphabet>/characterNN/<IIII>_<DD>.png

(IIII: the character's id 0001..1623; DD: the drawer 01..20). Each of the two
may also be the official zip, `DIR/images_background.zip` holding the folder
`images_background/`. `load_omniglot(DIR)` returns a `Dataset` whose training
split is the 30 background alphabets (964 characters) and whose test split is
the 20 evaluation alphabets (659 characters): every test class is unseen.

Labels are characters, numbered in the order of the two splits (background
0..963, then evaluation 964..1622); `groups` are alphabets, numbered the same
way over both splits; `drawers` are DD - 1. The images stay as shipped,
uint8 0 (ink) or 255 (paper) at 105x105: the run decides its input size and
polarity (`siamese_jax.preprocess`).
"""

import io
import os
import re
import sys
import time
import zipfile

import numpy as np

from siamese_jax.dataset import Dataset
from siamese_jax.errors import DataError

SPLITS = ("images_background", "images_evaluation")
_FILE = re.compile(r"^(\d{4})_(\d{2})\.png$")
IMAGE_SIZE = 105


def is_omniglot_dir(path: str) -> bool:
  """Whether `path` is a folder holding either Omniglot split, folder or zip."""
  return os.path.isdir(path) and any(
    os.path.exists(os.path.join(path, s)) or os.path.exists(os.path.join(path, s + ".zip"))
    for s in SPLITS
  )


class _Tree:
  """The PNG files under one split, from its folder or its zip, by relative path."""

  def __init__(self, root: str, split: str):
    folder, archive = os.path.join(root, split), os.path.join(root, split + ".zip")
    self.where = folder if os.path.isdir(folder) else archive
    self._zip = None
    self._prefix = split + "/"
    if os.path.isdir(folder):
      self.files = sorted(
        os.path.relpath(os.path.join(d, f), folder)
        for d, _, fs in os.walk(folder)
        for f in fs
        if f.endswith(".png")
      )
    elif os.path.isfile(archive):
      try:
        self._zip = zipfile.ZipFile(archive)
      except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
          f"{archive}: not a readable zip file ({e}). Download the official "
          f"{split}.zip again, or unzip it into {folder}/."
        ) from None
      prefix = split + "/"
      names = [n for n in self._zip.namelist() if n.endswith(".png")]
      outside = [n for n in names if not n.startswith(prefix)]
      if outside or not names:
        raise DataError(
          f"{archive}: its PNGs should lie under the folder {prefix} as in the official zip, "
          f"but {'it holds none' if not names else repr(outside[0]) + ' does not'}. Use the "
          f"official {split}.zip."
        )
      self.files = sorted(n[len(prefix) :] for n in names)
    else:
      raise DataError(
        f"{root}: holds neither {split}/ nor {split}.zip. An Omniglot folder needs both "
        f"images_background and images_evaluation, each as the official folder or zip "
        f"(https://github.com/brendenlake/omniglot, python/)."
      )

  def read(self, rel: str) -> bytes:
    if self._zip is not None:
      return self._zip.read(self._prefix + rel)
    with open(os.path.join(self.where, rel), "rb") as f:
      return f.read()


def decode_png(data: bytes, name: str) -> np.ndarray:
  """uint8[105, 105] of an Omniglot PNG: 0 ink, 255 paper.

  Raises:
    DataError: not a PNG, or not 105x105.
  """
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(io.BytesIO(data)) as img:
      size = img.size
      pixels = np.asarray(img.convert("L"))
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(
      f"{name}: not a readable PNG ({e}). Replace it with the official file."
    ) from None
  if size != (IMAGE_SIZE, IMAGE_SIZE):
    raise DataError(
      f"{name}: {size[0]}x{size[1]} pixels, but Omniglot's images are "
      f"{IMAGE_SIZE}x{IMAGE_SIZE}. Replace it with the official file."
    )
  return pixels


def _read_split(tree: _Tree, first_class: int, first_group: int, progress: bool):
  """Images, characters, alphabets, drawers and alphabet names of one split."""
  entries = []  # (alphabet, character folder, drawer, relative path)
  for rel in tree.files:
    parts = rel.split("/")
    m = _FILE.match(parts[-1])
    if len(parts) != 3 or m is None:
      raise DataError(
        f"{tree.where}: {rel!r} does not follow the layout <Alphabet>/characterNN/IIII_DD.png. "
        "Use the official Omniglot folders or zips."
      )
    entries.append((parts[0], parts[1], int(m.group(2)) - 1, rel))
  if not entries:
    raise DataError(f"{tree.where}: holds no PNGs. Use the official Omniglot folders or zips.")
  alphabets = sorted({e[0] for e in entries})
  characters = sorted({(e[0], e[1]) for e in entries})
  char_id = {c: i for i, c in enumerate(characters)}
  alpha_id = {a: i for i, a in enumerate(alphabets)}
  n = len(entries)
  images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  t0, shown = time.perf_counter(), 0.0
  for i, (_, _, _, rel) in enumerate(entries):
    images[i] = decode_png(tree.read(rel), f"{tree.where}: {rel}")
    now = time.perf_counter()
    if progress and now - shown > 2:
      print(f"\rreading {tree.where}: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
      shown = now
  if progress and shown:
    print(f"\rreading {tree.where}: {n}/{n} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
  labels = np.array([first_class + char_id[(e[0], e[1])] for e in entries], np.int32)
  groups = np.array([first_group + alpha_id[e[0]] for e in entries], np.int32)
  drawers = np.array([e[2] for e in entries], np.int32)
  return images, labels, groups, drawers, alphabets, len(characters)


def load_omniglot(path: str | os.PathLike, *, progress: bool = True) -> Dataset:
  """Omniglot's background (train) and evaluation (test) alphabets as a `Dataset`.

  Args:
    path: a folder holding images_background and images_evaluation, each
      the official folder or zip.
    progress: report the reading on stderr (it takes seconds).

  Returns:
    A Dataset of uint8[N, 105, 105] images (0 ink, 255 paper) with
    characters as labels and alphabets and drawers as `*_groups` and
    `*_drawers` (see the module docstring).

  Raises:
    DataError: a split is missing, or a file breaks the layout.
  """
  path = os.fspath(path)
  trees = [_Tree(path, s) for s in SPLITS]  # both checked before reading either
  train = _read_split(trees[0], 0, 0, progress)
  test = _read_split(trees[1], train[5], len(train[4]), progress)
  return Dataset(
    train[0], train[1], test[0], test[1], source=path,
    train_groups=train[2], test_groups=test[2], train_drawers=train[3], test_drawers=test[3],
    group_names=tuple(train[4] + test[4]),
  )  # fmt: skip
