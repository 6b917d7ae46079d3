"""`retrieval_metrics` against pytorch-metric-learning's `AccuracyCalculator`.

Needs torch and pytorch-metric-learning beside this project, which it does
not depend on: `pip install torch==2.13.0 "pytorch-metric-learning==2.9.*"`
(on this workplace's machines that torch is the CPU build on disk).

PML is run with `k="max_bin_count"` and an exact L2 search on the raw
embeddings (`CustomKNN(LpDistance(normalize_embeddings=False))`), for one
set (every query against the others) and for queries against references,
averaged by query and by class (`avg_of_avgs`). `get_accuracy` casts every
input to float32, so PML's search is float32 `torch.cdist` (its matmul
expansion past 25 rows) however the embeddings come; a third run gives PML
an `LpDistance` whose distance matrix is computed in float64
(`Float64LpDistance`, below), the rest of PML unchanged. It prints each
metric's largest absolute difference from ours and from a float64 brute
force; the target is 1e-6.

    python -m benchmarks.retrieval_pml [--trials 5]
"""

import argparse

import numpy as np

from siamese_jax import retrieval_metrics

PML_NAMES = {
  "precision_at_1": "precision_at_1",
  "r_precision": "r_precision",
  "map_at_r": "mean_average_precision_at_r",
  "mean_average_precision": "mean_average_precision",
  "mean_reciprocal_rank": "mean_reciprocal_rank",
}


def pml_metrics(
  query, query_labels, reference=None, reference_labels=None, avg_of_avgs=False, wide=False
):
  import torch
  from pytorch_metric_learning.distances import LpDistance
  from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
  from pytorch_metric_learning.utils.inference import CustomKNN

  class Float64LpDistance(LpDistance):
    """PML's L2 distance, its matrix computed from the float32 inputs in float64."""

    def compute_mat(self, query_emb, ref_emb):
      return super().compute_mat(query_emb.double(), None if ref_emb is None else ref_emb.double())

  distance = (Float64LpDistance if wide else LpDistance)(normalize_embeddings=False)
  calculator = AccuracyCalculator(
    include=tuple(PML_NAMES.values()), k="max_bin_count", avg_of_avgs=avg_of_avgs,
    knn_func=CustomKNN(distance),
  )  # fmt: skip
  t = lambda x: None if x is None else torch.from_numpy(np.asarray(x))  # noqa: E731
  got = calculator.get_accuracy(t(query), t(query_labels), t(reference), t(reference_labels))
  return {ours: got[theirs] for ours, theirs in PML_NAMES.items()}


def float64_metrics(query, query_labels, reference=None, reference_labels=None, avg_of_avgs=False):
  """The five metrics in float64 by brute force: every distance, a stable sort."""
  same = reference is None
  ref, ref_labels = (query, query_labels) if same else (reference, reference_labels)
  d = np.sqrt(((query[:, None, :].astype(np.float64) - ref[None, :, :]) ** 2).sum(-1))
  if same:
    np.fill_diagonal(d, np.inf)
  counts = np.bincount(ref_labels, minlength=query_labels.max() + 1)[query_labels] - same
  k, kept = counts.max(), counts > 0
  rel = ref_labels[np.argsort(d, axis=1, kind="stable")[:, :k]] == query_labels[:, None]
  rel, r, ranks = rel[kept], counts[kept], np.arange(1, k + 1)
  precision = np.cumsum(rel, axis=1) / ranks
  in_r = ranks[None, :] <= r[:, None]
  rows = np.stack([
    rel[:, 0], (rel & in_r).sum(1) / r, (precision * rel * in_r).sum(1) / r,
    (precision * rel).sum(1) / r, np.where(rel.any(1), 1 / (rel.argmax(1) + 1), 0.0),
  ], axis=1)  # fmt: skip
  if avg_of_avgs:
    labels = query_labels[kept]
    rows = np.stack([rows[labels == c].mean(0) for c in np.unique(labels)])
  return dict(zip(PML_NAMES, rows.mean(0), strict=True))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=5)
  parser.add_argument("--dyadic", action="store_true", help="coordinates in 1/64ths")
  args = parser.parse_args(argv)
  worst = {}
  for trial in range(args.trials):
    rng = np.random.default_rng(trial)
    # 15 classes of uneven sizes, one class of a single image, overlapping clusters.
    labels = rng.integers(0, 15, 600)
    labels[0] = 15
    emb = (rng.normal(size=(600, 16)) + 0.4 * labels[:, None]).astype(np.float32)
    if args.dyadic:
      emb = np.round(emb * 64) / 64
    ref_labels = rng.integers(0, 14, 900)  # classes 14 and 15 have no reference
    ref = (rng.normal(size=(900, 16)) + 0.4 * ref_labels[:, None]).astype(np.float32)
    if args.dyadic:
      ref = np.round(ref * 64) / 64
    for setting, queries in (
      ("one set", (emb, labels)),
      ("references", (emb, labels, ref, ref_labels)),
    ):
      for average in ("query", "class"):
        extra = (
          {} if len(queries) == 2 else {"reference_embeddings": ref, "reference_labels": ref_labels}
        )
        ours = retrieval_metrics(queries[0], queries[1], average=average, **extra)
        theirs = pml_metrics(*queries, avg_of_avgs=average == "class")
        wide = [q.astype(np.float64) if q.dtype == np.float32 else q for q in queries]
        theirs64 = pml_metrics(*wide, avg_of_avgs=average == "class")
        exact = pml_metrics(*queries, avg_of_avgs=average == "class", wide=True)
        truth = float64_metrics(*queries, avg_of_avgs=average == "class")
        for name, value in theirs.items():
          key = (setting, average, name)
          diffs = (ours[name] - value, ours[name] - theirs64[name], ours[name] - exact[name],
                   ours[name] - truth[name], value - truth[name], exact[name] - truth[name])  # fmt: skip
          old = worst.get(key, (0.0,) * len(diffs))
          worst[key] = tuple(max(a, abs(b)) for a, b in zip(old, diffs, strict=True))
  print(
    f"max |difference| over {args.trials} trials; PML64: PML given the embeddings as float64 "
    "(it casts them back); PMLx: PML with its distance matrix in float64; f64: a brute force "
    "in float64"
  )
  names = ("ours-PML", "ours-PML64", "ours-PMLx", "ours-f64", "PML-f64", "PMLx-f64")
  print(f"{'search':<12}{'average':<9}{'metric':<24}" + "".join(f"{n:>11}" for n in names))
  for (setting, average, name), diff in worst.items():
    print(f"{setting:<12}{average:<9}{name:<24}" + "".join(f"{x:>11.1e}" for x in diff))
  columns = list(zip(*worst.values(), strict=True))
  print("largest: " + ", ".join(
    f"{n} {max(c):.1e}" for n, c in zip(names, columns, strict=True)
  ) + " (target 1e-6)")  # fmt: skip


if __name__ == "__main__":
  main()
