"""Pictures: distance histograms, the 2-D embedding, learning curves, calibration.

matplotlib is an optional dependency (`pip install -e ".[plots]"`); it is
imported only when a picture is drawn, with the Agg backend (no display).
Each PNG is written to a temporary file and renamed into place.
"""

import io
import json
import os

import numpy as np

from siamese_jax.core.errors import ConfigError
from siamese_jax.core.files import OUTPUT_FIX, RUN_FIX, atomic_write_bytes


def _pyplot():
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError as e:
    raise ConfigError(
      "Plots need matplotlib: pip install matplotlib (or pip install -e '.[plots]')."
    ) from e
  return plt


def have_matplotlib() -> bool:
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    return False
  return True


def _save(fig, path: str, fix: str = OUTPUT_FIX) -> str:
  buf = io.BytesIO()
  try:
    fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
  finally:
    _pyplot().close(fig)
  atomic_write_bytes(path, buf.getvalue(), fix=fix)
  return os.fspath(path)


def distance_histograms(
  d: np.ndarray, y: np.ndarray, path: str, thresholds: dict[str, float], title: str = ""
) -> str:
  """Histograms of same- and different-class distances float[P], `thresholds` as lines."""
  plt = _pyplot()
  d, y = np.asarray(d), np.asarray(y)
  fig, ax = plt.subplots(figsize=(7, 4))
  bins = np.linspace(0.0, max(1.5, float(np.quantile(d, 0.999))), 80)
  ax.hist(
    d[y == 1], bins=bins, alpha=0.6, label=f"same digit ({int((y == 1).sum())})", color="tab:blue"
  )
  ax.hist(
    d[y == 0],
    bins=bins,
    alpha=0.6,
    label=f"different digits ({int((y == 0).sum())})",
    color="tab:orange",
  )
  for (name, t), style in zip(thresholds.items(), ("--", ":", "-."), strict=False):
    ax.axvline(t, color="black", linestyle=style, label=f"{name} = {t:.3f}")
  ax.set_xlabel("distance between embeddings")
  ax.set_ylabel("pairs")
  ax.set_yscale("log")
  ax.set_title(title or "Test-pair distances")
  ax.legend()
  return _save(fig, path, RUN_FIX)  # a run's own file


def embedding_scatter(emb: np.ndarray, labels: np.ndarray, path: str, title: str = "") -> str:
  """A float[N, 2] embedding as a scatter coloured by int[N] class."""
  plt = _pyplot()
  emb, labels = np.asarray(emb), np.asarray(labels)
  if emb.ndim != 2 or emb.shape[1] != 2:
    raise ValueError(f"embedding_scatter needs (N, 2) embeddings, got {emb.shape}.")
  fig, ax = plt.subplots(figsize=(7, 7))
  cmap = plt.get_cmap("tab10")
  for digit in np.unique(labels):
    sel = labels == digit
    ax.scatter(
      emb[sel, 0], emb[sel, 1], s=2, alpha=0.5, color=cmap(int(digit) % 10), label=str(digit)
    )
  ax.legend(markerscale=6, title="digit", loc="best")
  ax.set_title(title or "2-D embedding of the test set")
  ax.set_aspect("equal", adjustable="datalim")
  return _save(fig, path)


def read_metrics(path: str) -> list[dict]:
  from siamese_jax.core.errors import WorkdirError

  try:
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except FileNotFoundError:
    raise WorkdirError(f"{path} not found: is this a run's workdir?") from None
  except ValueError as e:
    raise WorkdirError(f"{path} is not JSON lines ({e}).") from None
  if not rows:
    raise WorkdirError(f"{path} holds no epochs yet.")
  for i, row in enumerate(rows, 1):
    missing = [k for k in ("epoch", "train_loss", "train_accuracy")
               if not isinstance(row, dict) or k not in row]  # fmt: skip
    if missing:
      raise WorkdirError(
        f"{path}: line {i} has no {', '.join(missing)}: it was damaged. Run the run's own "
        "command with --resume: it writes every epoch's line again from the checkpoint."
      )
  return rows


def learning_curves(metrics_path: str, path: str, val_label: str = "validation") -> str:
  """Loss and accuracy per epoch, train and validation, from metrics.jsonl."""
  plt = _pyplot()
  rows = read_metrics(metrics_path)
  epochs = [r["epoch"] for r in rows]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for key, style, label in (("train", "-o", "train (with dropout)"), ("val", "-s", val_label)):
    if all(f"{key}_loss" in r and f"{key}_accuracy" in r for r in rows):
      ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, ms=3, label=label)
      ax_acc.plot(epochs, [r[f"{key}_accuracy"] for r in rows], style, ms=3, label=label)
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("the run's loss")
  ax_loss.legend()
  ax_acc.set_xlabel("epoch")
  ax_acc.set_ylabel("accuracy (the loss's own)")
  ax_acc.legend()
  fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
  return _save(fig, path)


def calibration_curve(cal, path: str, title: str = "") -> str:
  """Precision, recall and F1 of a `Calibration` against the threshold, the chosen one marked."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for values, name in ((cal.precisions, "precision"), (cal.recalls, "recall"), (cal.f1s, "F1")):
    ax.plot(cal.thresholds, values, label=name)
  ax.axvline(cal.threshold, color="k", linestyle="--", label=f"chosen {cal.threshold:.3f}")
  ax.set_xlabel("threshold on the nearest distance")
  ax.set_ylim(0, 1.02)
  ax.legend(loc="lower right")
  ax.set_title(title or f"calibration (target {cal.target})")
  return _save(fig, path)


def oneshot_episodes(
  images: np.ndarray, support: np.ndarray, query: np.ndarray, guess: np.ndarray, path: str,
  title: str = "",
) -> str:  # fmt: skip
  """Rows of 20-way 1-shot episodes: query, candidates, the true one green, a wrong guess red.

  `images` as the network sees them; `support` int[E, ways, 1], `query`
  int[E, ways] (class 0's is drawn), `guess` int[E] the model's choice.
  """
  plt = _pyplot()
  e, ways = support.shape[:2]
  fig, axes = plt.subplots(e, ways + 1, figsize=(0.75 * (ways + 1), 0.85 * e), squeeze=False)
  for r in range(e):
    cells = [images[query[r, 0]], *(images[support[r, k, 0]] for k in range(ways))]
    for c, img in enumerate(cells):
      ax = axes[r, c]
      ax.imshow(img, cmap="gray_r" if c else "Blues", vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      colour = None
      if c == 1:
        colour = "tab:green"
      elif c - 1 == guess[r] and guess[r] != 0:
        colour = "tab:red"
      for side in ax.spines.values():
        side.set_edgecolor(colour or "lightgray")
        side.set_linewidth(3 if colour else 0.5)
    axes[r, 0].set_ylabel("right" if guess[r] == 0 else "wrong", rotation=0, labelpad=18)
  axes[0, 0].set_title("query", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def alphabet_map(
  points: np.ndarray, labels: np.ndarray, images: np.ndarray, path: str, title: str = ""
) -> str:
  """A 2-D map of one alphabet: a colour per character, its first drawing at its mean."""
  plt = _pyplot()
  from matplotlib.offsetbox import AnnotationBbox, OffsetImage

  fig, ax = plt.subplots(figsize=(7, 7))
  classes = np.unique(labels)
  cmap = plt.get_cmap("tab20")
  for i, c in enumerate(classes):
    m = labels == c
    ax.scatter(points[m, 0], points[m, 1], s=10, color=cmap(i % 20), alpha=0.7)
    first = np.flatnonzero(m)[0]
    box = OffsetImage(images[first], cmap="gray_r", zoom=0.9)
    ax.add_artist(AnnotationBbox(box, points[m].mean(0), frameon=True, pad=0.1,
                                 bboxprops={"edgecolor": cmap(i % 20)}))  # fmt: skip
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=10)
  return _save(fig, path)
