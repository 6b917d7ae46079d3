"""One-shot recognition: N-way K-shot episodes, and Lake et al.'s 20 official runs.

An episode (Lake, Salakhutdinov & Tenenbaum 2015; within one alphabet as
in Koch et al. 2015) takes N classes of one group and K + 1 drawers: the
first K drew the support, the last one query per class. A query is the
class whose support lies nearest (mean distance for K > 1). The classes are
never trained on. `oneshot_metrics` gives 20-way 1-shot, 5-way 1-shot and
20-way 5-shot with a 95% interval (1.96 standard errors over episodes).

Lake's `all_runs` (zip or folder) holds run01..run20: training/classKK.png
(20 characters of one alphabet), test/itemMM.png (each by another drawer)
and class_labels.txt (`runNN/test/itemMM.png runNN/training/classKK.png`).
`score_runs` classifies each item as its nearest training image.
"""

import dataclasses
import os
import re

import jax
import numpy as np

from siamese_jax.core.errors import DataError
from siamese_jax.data.archive import Archive
from siamese_jax.data.images import decode
from siamese_jax.data.omniglot import OMNIGLOT_IMAGE_SIZE
from siamese_jax.losses.distances import from_squared, pairwise_distances

# (ways, shots) reported for every one-shot split; 5-way 5-shot last, so the
# others keep their episode streams (`fold_in(key, i)`).
STANDARD = ((20, 1), (5, 1), (20, 5), (5, 5))
EPISODES = 1000


def _rng(key: jax.Array) -> np.random.Generator:
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def episodes(
  key: jax.Array,
  labels: np.ndarray,
  groups: np.ndarray,
  drawers: np.ndarray | None,
  *,
  ways: int,
  shots: int,
  count: int,
) -> tuple[np.ndarray, np.ndarray] | None:
  """`count` N-way K-shot episodes within groups: (support int[count, N, K], query int[count, N]).

  Query j belongs to support row j. Without `drawers` a class's support and
  query are distinct random images. None when no group holds N classes with
  K + 1 drawers in common.
  """
  rng = _rng(key)
  labels = np.asarray(labels)
  if drawers is None:
    drawers = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):  # each image its own drawer
      members = np.flatnonzero(labels == c)
      drawers[members] = np.arange(len(members))
  classes = np.unique(labels)
  num_drawers = int(drawers.max()) + 1
  # table[c, d]: the image of class c by drawer d, -1 if none.
  table = np.full((len(classes), num_drawers), -1, np.int64)
  table[np.searchsorted(classes, labels), drawers] = np.arange(len(labels))
  class_group = np.empty(len(classes), np.int64)
  class_group[np.searchsorted(classes, labels)] = groups
  enough = (table >= 0).sum(1) >= shots + 1
  eligible = [m for g in np.unique(class_group)
              if len(m := np.flatnonzero((class_group == g) & enough)) >= ways]  # fmt: skip
  if not eligible:
    return None
  support = np.empty((count, ways, shots), np.int64)
  query = np.empty((count, ways), np.int64)
  filled = tries = 0
  while filled < count:
    tries += 1
    if tries > 100 * count:
      raise DataError(
        f"Could not draw {ways}-way {shots}-shot episodes: the classes of a group rarely "
        f"share {shots + 1} drawers. Use fewer shots or ways."
      )
    members = eligible[rng.integers(len(eligible))]
    chosen = rng.choice(members, ways, replace=False)
    common = np.flatnonzero((table[chosen] >= 0).all(0))
    if len(common) < shots + 1:
      continue  # these classes share too few drawers: draw again
    who = rng.choice(common, shots + 1, replace=False)
    support[filled] = table[chosen][:, who[:shots]]
    query[filled] = table[chosen, who[shots]]
    filled += 1
  return support, query


def episode_accuracy(embeddings: np.ndarray, support: np.ndarray, query: np.ndarray) -> np.ndarray:
  """float[E]: each episode's share of queries nearest their own class (float[N, D] embeddings)."""
  e = np.asarray(embeddings, np.float64)
  s = e[support]  # (E, ways, shots, D)
  q = e[query]  # (E, ways, D)
  # d[e, i, j, k]: query i to shot k of class j, from inner products: the
  # differences themselves would take E * ways^2 * shots * D floats (2 GB
  # for 1,000 20-way 5-shot episodes of 128-d embeddings).
  sq = (
    (q**2).sum(-1)[:, :, None, None]
    + (s**2).sum(-1)[:, None]
    - 2 * np.einsum("eid,ejkd->eijk", q, s)
  )
  d = from_squared(sq)
  guess = d.mean(-1).argmin(-1)  # (E, ways)
  return (guess == np.arange(support.shape[1])).mean(-1)


def oneshot_metrics(
  embeddings: np.ndarray,
  labels: np.ndarray,
  groups: np.ndarray,
  drawers: np.ndarray | None,
  key: jax.Array,
  *,
  prefix: str,
  count: int = EPISODES,
  settings=STANDARD,
) -> dict[str, float | int | None]:
  """`{prefix}oneshot_{N}way_{K}shot` and `_ci95` per setting; None where no group has N classes."""
  out: dict[str, float | int | None] = {f"{prefix}oneshot_episodes": count}
  for i, (ways, shots) in enumerate(settings):
    name = f"{prefix}oneshot_{ways}way_{shots}shot"
    drawn = episodes(
      jax.random.fold_in(key, i), labels, groups, drawers, ways=ways, shots=shots, count=count
    )
    if drawn is None:
      out[name] = out[name + "_ci95"] = None
      continue
    acc = episode_accuracy(embeddings, *drawn)
    out[name] = float(acc.mean())
    out[name + "_ci95"] = float(1.96 * acc.std(ddof=1) / np.sqrt(len(acc))) if count > 1 else 0.0
  return out


@dataclasses.dataclass(frozen=True)
class OfficialRun:
  """One of Lake's runs: [20, 105, 105] training and test images as read, int[20] answers."""

  name: str
  training: np.ndarray
  test: np.ndarray
  answer: np.ndarray


_LINE = re.compile(r"^(run\d\d)/test/item(\d\d)\.png\s+(run\d\d)/training/class(\d\d)\.png$")
_RUNS_FIX = "Pass --runs Lake's all_runs.zip or the folder it unzips to (run01 .. run20)."


def _open_runs(path: str) -> Archive:
  """The runs' files, from the folder or the zip; in a zip they may sit in one folder."""
  files = Archive(path, fix=_RUNS_FIX)
  if files.is_zip:
    hit = next((n for n in files.stored_names()
                if re.search(r"(^|/)run01/class_labels\.txt$", n)), None)  # fmt: skip
    if hit is not None:
      files.prefix = hit[: -len("run01/class_labels.txt")]
  return files


def _read(files: Archive, rel: str) -> bytes:
  if not files.exists(rel):
    raise DataError(
      f"{files.path}: {rel} is missing. Each run folder needs class_labels.txt, "
      "training/class01.png .. class20.png and test/item01.png .. item20.png; use the "
      "official all_runs."
    )
  return files.read(rel)


def _read_run_png(files: Archive, rel: str) -> np.ndarray:
  pixels = decode(_read(files, rel), f"{files.path}: {rel}")
  if pixels.shape != (OMNIGLOT_IMAGE_SIZE, OMNIGLOT_IMAGE_SIZE):
    raise DataError(
      f"{files.path}: {rel} is {'x'.join(map(str, pixels.shape))} pixels, but the official "
      f"runs' images are {OMNIGLOT_IMAGE_SIZE}x{OMNIGLOT_IMAGE_SIZE} grayscale. Replace it "
      "with the official file."
    )
  return pixels


def read_runs(path: str | os.PathLike, *, count: int | None = None) -> list[OfficialRun]:
  """Lake's official runs from all_runs.zip or its folder: `count` of them, or all from run01 on.

  Raises DataError naming the file and the fix: a missing run, file or
  image, a malformed class_labels.txt line, or an image of another size.
  """
  files = _open_runs(os.fspath(path))
  if count is None:
    count = 0
    while files.exists(f"run{count + 1:02d}/class_labels.txt"):
      count += 1
    count = max(count, 1)  # none at all: reading run01 says what is missing
  runs = []
  for r in range(1, count + 1):
    name = f"run{r:02d}"
    labels_rel = f"{name}/class_labels.txt"
    text = _read(files, labels_rel).decode("utf-8", errors="replace")
    answer = np.full(20, -1, np.int64)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for number, line in enumerate(lines, 1):
      m = _LINE.match(line)
      if m is None or m.group(1) != name or m.group(3) != name:
        raise DataError(
          f"{files.path}: {labels_rel}, line {number}: {line!r} is not of the form "
          f"'{name}/test/itemMM.png {name}/training/classKK.png'. Use the official file."
        )
      item, cls = int(m.group(2)), int(m.group(4))
      if not (1 <= item <= 20 and 1 <= cls <= 20) or answer[item - 1] >= 0:
        raise DataError(
          f"{files.path}: {labels_rel}, line {number}: {line!r} names item {item} or class "
          f"{cls} outside 01..20, or item {item} twice. Use the official file."
        )
      answer[item - 1] = cls - 1
    if (answer < 0).any():
      missing = ", ".join(f"item{i + 1:02d}" for i in np.flatnonzero(answer < 0))
      raise DataError(
        f"{files.path}: {labels_rel} gives no answer for {missing}; it needs one line per "
        "test item (20). Use the official file."
      )
    training = np.stack([_read_run_png(files, f"{name}/training/class{k:02d}.png")
                         for k in range(1, 21)])  # fmt: skip
    test = np.stack([_read_run_png(files, f"{name}/test/item{k:02d}.png") for k in range(1, 21)])
    runs.append(OfficialRun(name, training, test, answer))
  return runs


def score_runs(model, runs: list[OfficialRun]) -> dict:
  """Each run's test items as their nearest training image: errors per run, mean accuracy."""
  per_run = {}
  accs = []
  for run in runs:
    train_emb, test_emb = model.embed(run.training), model.embed(run.test)
    d = np.asarray(pairwise_distances(test_emb, train_emb))
    wrong = int((d.argmin(1) != run.answer).sum())
    per_run[run.name] = {"errors": wrong, "error_rate": wrong / len(run.answer)}
    accs.append(1 - wrong / len(run.answer))
  mean = float(np.mean(accs))
  return {"runs": per_run, "mean_accuracy": mean, "mean_error_rate": 1 - mean}
