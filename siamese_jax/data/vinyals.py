"""Omniglot's pooled few-shot split (Vinyals et al. 2016), as the prototypical networks list it.

The class lists ship beside this module in `splits/vinyals/` (MIT, their
LICENSE there): a line `Alphabet/characterNN/rotDDD` is one character of
either official set turned by DDD degrees, each rotation a class of its
own. `load_vinyals` pools the two sets' alphabets: its training split is
trainval's 1,200 characters as drawn (a run's `--rotations` makes their
4,800 classes), its test split test.txt's 1,692 classes, 423 characters in
four rotations, in one group, so that every episode draws from all of them.
val.txt's 172 characters are 5 whole alphabets of trainval: the data's
`val_groups`, which `--holdout-groups 5` holds out to validate on.
"""

import os

import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.dataset import Dataset
from siamese_jax.data.omniglot import read_splits

LISTS = os.path.join(os.path.dirname(__file__), "splits", "vinyals")
ROTATIONS = (0, 90, 180, 270)


def read_class_list(path: str) -> list[tuple[str, str, int]]:
  """(alphabet, characterNN, degrees) of each line of a class list; DataError naming a bad one."""
  out = []
  with open(path) as f:
    for i, line in enumerate(f, 1):
      parts = line.strip().split("/")
      degrees = parts[2][3:] if len(parts) == 3 and parts[2].startswith("rot") else ""
      if not degrees.isdigit() or int(degrees) not in ROTATIONS:
        raise DataError(
          f"{path}, line {i}: {line.strip()!r} is not Alphabet/characterNN/rotDDD with DDD one "
          "of 000, 090, 180, 270. Use the split's published lists."
        )
      out.append((parts[0], parts[1], int(degrees)))
  return out


def load_vinyals(
  path: str | os.PathLike, *, lists: str | None = None, progress: bool = True
) -> Dataset:
  """Omniglot at `path` (both official sets, folders or zips) in the pooled split of `lists`.

  Train: uint8[24000, 105, 105] (trainval's characters, labels 0..1199,
  alphabets as groups); test: uint8[33840, 105, 105], 1,692 classes after
  them, one group. Raises DataError when a listed character is not in the
  data, or trainval lacks one of a character's rotations.
  """
  path, lists = os.fspath(path), lists or LISTS
  sets = read_splits(path, progress)
  images = np.concatenate([s.images for s in sets])
  labels = np.concatenate([s.labels for s in sets])
  groups = np.concatenate([s.groups for s in sets])
  drawers = np.concatenate([s.drawers for s in sets])
  label_of = {c: i for i, c in enumerate(sets[0].characters + sets[1].characters)}
  trainval = read_class_list(os.path.join(lists, "trainval.txt"))
  test = read_class_list(os.path.join(lists, "test.txt"))
  val = read_class_list(os.path.join(lists, "val.txt"))
  for name, entries in (("trainval", trainval), ("test", test), ("val", val)):
    missing = [f"{a}/{c}" for a, c, _ in entries if (a, c) not in label_of]
    if missing:
      raise DataError(
        f"{path}: the {name} list names {missing[0]} ({len(missing)} missing in all), which "
        "neither Omniglot set holds. Point --data-dir at the official images_background and "
        "images_evaluation."
      )
  rotations: dict[int, set[int]] = {}
  for a, c, degrees in trainval:
    rotations.setdefault(label_of[(a, c)], set()).add(degrees)
  partial = [label for label, seen in rotations.items() if seen != set(ROTATIONS)]
  if partial:
    raise DataError(
      f"{lists}/trainval.txt lists only some rotations of {len(partial)} character(s); a run "
      "adds all four (--rotations). Use the split's published lists."
    )
  val_alphabets = sorted({a for a, _, _ in val})
  if {(a, c) for a, c, _ in trainval if a in val_alphabets} != {(a, c) for a, c, _ in val}:
    raise DataError(
      f"{lists}/val.txt should list whole alphabets of trainval.txt (the published val list "
      f"does: {len(val_alphabets)} alphabets). Use the split's published lists."
    )
  train_classes = np.array(sorted(rotations), np.int64)
  keep = np.isin(labels, train_classes)
  dense = np.searchsorted(train_classes, labels[keep]).astype(np.int32)
  test_images, test_labels, test_drawers = [], [], []
  for k, (a, c, degrees) in enumerate(test):
    members = np.flatnonzero(labels == label_of[(a, c)])
    test_images.append(np.rot90(images[members], degrees // 90, axes=(1, 2)))
    test_labels.append(np.full(len(members), len(train_classes) + k, np.int32))
    test_drawers.append(drawers[members])
  alphabets = tuple(sets[0].alphabets + sets[1].alphabets)
  test_labels = np.concatenate(test_labels)
  return Dataset(
    images[keep], dense, np.concatenate(test_images), test_labels, source=f"{path} (vinyals)",
    train_groups=groups[keep], test_groups=np.full(len(test_labels), len(alphabets), np.int32),
    train_drawers=drawers[keep], test_drawers=np.concatenate(test_drawers),
    group_names=(*alphabets, "pooled test classes"),
    val_groups=tuple(alphabets.index(a) for a in val_alphabets),
  )  # fmt: skip
