"""What a run reports: its closing lines, and the summary over models (`summarize`, `headline`)."""

import re
import statistics
from collections.abc import Sequence
from typing import Any

SUMMARY_NAME = "summary.json"


def print_results(t: dict[str, Any], out) -> None:
  """The console's summary of results.json, led by what the run's loss means."""
  pairs = "test_accuracy" in t
  if pairs:
    print(f"* Accuracy on training set: {100 * t['train_accuracy']:0.2f}%", file=out)
    print(f"* Accuracy on test set: {100 * t['test_accuracy']:0.2f}%", file=out)
  else:
    _print_oneshot(t, out)
  print(f"* Test ROC AUC: {t['test_roc_auc']:.4f}", file=out)
  print(
    f"* Threshold chosen on {t['threshold_source']}: {t['threshold']:.4f}; test accuracy "
    f"at it: {100 * t['test_accuracy_at_threshold']:0.2f}%",
    file=out,
  )
  for split in ("test", "val"):
    if t.get(f"{split}_precision_at_1") is not None:
      print(f"* {_retrieval_line(t, split + '_')} ({split} images)", file=out)
  for group in ("seen", "unseen"):
    if f"test_{group}_images" in t:
      p = f"test_{group}_"
      pair = (
        f"accuracy {100 * t[p + 'accuracy']:0.2f}%, at threshold "
        f"{100 * t[p + 'accuracy_at_threshold']:0.2f}%, ROC AUC {t[p + 'roc_auc']:.4f}; "
        if t[p + "accuracy"] is not None
        else "no pair metrics (fewer than 2 classes); "
      )
      print(
        f"* {group} classes {','.join(map(str, t[p + 'classes']))}: {pair}{_retrieval_line(t, p)}",
        file=out,
      )
  if pairs:
    _print_oneshot(t, out)
  out.flush()


def _print_oneshot(t: dict[str, Any], out) -> None:
  for split in ("test", "val"):
    line = _oneshot_line(t, split + "_")
    if line:
      print(f"* One-shot ({split} classes, never trained on): {line}", file=out)


def _oneshot_line(t: dict[str, Any], p: str) -> str:
  """`20-way 1-shot 91.20 ± 0.84%, ...` over the episodes, or "" without them."""
  parts = []
  for key in t:  # in the order the evaluation wrote them
    m = re.fullmatch(re.escape(p) + r"oneshot_(\d+)way_(\d+)shot", key)
    if m and t[key] is not None:
      parts.append(f"{m[1]}-way {m[2]}-shot {100 * t[key]:0.2f} ± {100 * t[key + '_ci95']:0.2f}%")
  if not parts:
    return ""
  return ", ".join(parts) + f" (95% intervals, {t[p + 'oneshot_episodes']} episodes each)"


def _retrieval_line(t: dict[str, Any], p: str) -> str:
  if t.get(p + "precision_at_1") is None:
    return "no retrieval metrics (no class with 2 images)"
  line = f"P@1 {100 * t[p + 'precision_at_1']:0.2f}%, MAP@R {100 * t[p + 'map_at_r']:0.2f}%"
  if p + "r_precision" in t:
    line += f", R-Precision {100 * t[p + 'r_precision']:0.2f}%"
  skipped = t.get(p + "retrieval_skipped_queries")
  if skipped:
    line += f" ({skipped} queries skipped: no other image of their class)"
  return line


def console_line(epoch: int, total: int, lines: list[dict]) -> str:
  """One line per epoch for K models: each model's loss and validation accuracy."""

  def col(k, fmt):
    return " ".join(format(line[k], fmt) for line in lines)

  width = len(str(total))
  val = f"val_accuracy {col('val_accuracy', '.4f')}  " if "val_accuracy" in lines[0] else ""
  return (
    f"epoch {epoch:>{width}}/{total}  train_loss {col('train_loss', '.4f')}  "
    f"{val}{lines[0]['epoch_seconds']:6.2f} s"
  )


def summarize(results: Sequence[dict]) -> dict:
  """{"results": {key: {mean, std (ddof=1), min, max}}} over the numeric keys all share."""
  keys = [
    k for k, v in results[0].items()
    if isinstance(v, int | float) and not isinstance(v, bool)
    and all(isinstance(r.get(k), int | float) for r in results)
  ]  # fmt: skip
  out = {}
  for k in keys:
    xs = [float(r[k]) for r in results]
    out[k] = {
      "mean": statistics.fmean(xs),
      "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
      "min": min(xs),
      "max": max(xs),
    }
  return {"results": out, "num_seeds": len(results)}


HEADLINE = (
  ("test_accuracy", "test accuracy", 100, "%"),
  ("test_accuracy_at_threshold", "test accuracy at the chosen threshold", 100, "%"),
  ("test_roc_auc", "test ROC AUC", 1, ""),
  ("test_precision_at_1", "test P@1", 100, "%"),
  ("test_map_at_r", "test MAP@R", 100, "%"),
  ("test_unseen_accuracy", "unseen-class test accuracy", 100, "%"),
  ("test_oneshot_20way_1shot", "test 20-way 1-shot accuracy", 100, "%"),
  ("test_oneshot_5way_1shot", "test 5-way 1-shot accuracy", 100, "%"),
  ("test_oneshot_20way_5shot", "test 20-way 5-shot accuracy", 100, "%"),
  ("test_oneshot_5way_5shot", "test 5-way 5-shot accuracy", 100, "%"),
)


def headline(summary: dict) -> list[str]:
  """Lines such as `test accuracy 97.22 ± 0.20 % over 3 seeds`."""
  n, r = summary["num_seeds"], summary["results"]
  lines = []
  order = (
    HEADLINE if "test_accuracy" in r else sorted(HEADLINE, key=lambda h: "oneshot" not in h[0])
  )
  for key, name, scale, unit in order:
    if key in r:
      s = r[key]
      digits = 2 if scale == 100 else 4
      lines.append(
        f"{name} {scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
        f"{' ' + unit if unit else ''} over {n} seeds"
      )
  return lines
