"""Pictures: distance histograms, the 2-D embedding, learning curves, calibration.

matplotlib is an optional dependency (`pip install -e ".[plots]"`); it is
imported only when a picture is drawn, with the Agg backend (no display).
Each PNG is written to a temporary file and renamed into place.
"""

import io
import json
import os

import numpy as np

from siamese_jax.errors import ConfigError
from siamese_jax.files import atomic_write_bytes


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


def _save(fig, path: str) -> str:
  buf = io.BytesIO()
  try:
    fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
  finally:
    _pyplot().close(fig)
  atomic_write_bytes(path, buf.getvalue())
  return os.fspath(path)


def distance_histograms(
  d: np.ndarray, y: np.ndarray, path: str, thresholds: dict[str, float], title: str = ""
) -> str:
  """Histograms of same-digit and different-digit distances, with thresholds.

  Args:
    d: float[P] distances; y: float[P] labels (1.0 = same digit).
    path: the PNG to write.
    thresholds: {label: value} drawn as vertical lines.
  """
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
  return _save(fig, path)


def embedding_scatter(emb: np.ndarray, labels: np.ndarray, path: str, title: str = "") -> str:
  """A 2-D embedding as a scatter coloured by digit.

  Args:
    emb: float[N, 2] embeddings; labels: int[N] digits.
    path: the PNG to write.
  """
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
  from siamese_jax.errors import WorkdirError

  try:
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except FileNotFoundError:
    raise WorkdirError(f"{path} not found: is this a run's workdir?") from None
  except ValueError as e:
    raise WorkdirError(f"{path} is not JSON lines ({e}).") from None
  if not rows:
    raise WorkdirError(f"{path} holds no epochs yet.")
  return rows


def learning_curves(metrics_path: str, path: str, val_label: str = "validation") -> str:
  """Loss and accuracy per epoch, train and validation, from metrics.jsonl."""
  plt = _pyplot()
  rows = read_metrics(metrics_path)
  epochs = [r["epoch"] for r in rows]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for key, style, label in (("train", "-o", "train (with dropout)"), ("val", "-s", val_label)):
    if f"{key}_loss" in rows[0]:
      ax_loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, ms=3, label=label)
      ax_acc.plot(epochs, [r[f"{key}_accuracy"] for r in rows], style, ms=3, label=label)
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("contrastive loss")
  ax_loss.legend()
  ax_acc.set_xlabel("epoch")
  ax_acc.set_ylabel("pair accuracy (d < threshold)")
  ax_acc.legend()
  fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
  return _save(fig, path)


def calibration_curve(cal, path: str, title: str = "") -> str:
  """Precision, recall and F1 against the distance threshold, the chosen one marked.

  Args:
    cal: a `siamese_jax.index.Calibration`.
    path: the PNG to write.
  """
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
