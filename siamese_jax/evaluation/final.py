"""What a finished run reports, each image embedded once without dropout.

* pair metrics: loss and accuracy at the fixed threshold, test ROC AUC,
  and the test accuracy at a threshold chosen on validation pairs (else
  training pairs, never test);
* retrieval metrics of the test images (and validation images);
* with `train_classes`, every test metric for seen (`test_seen_*`) and
  unseen (`test_unseen_*`) classes;
* with groups (Omniglot's alphabets), one-shot episodes:
  `test_oneshot_20way_1shot`, `_5way_1shot`, `_20way_5shot` with `_ci95`,
  and `val_oneshot_*` for held-out groups.

Images are embedded as `load_trained` embeds them: with the run's test-time
shifts, and for a `--seeds` run's ensemble, by every member (`embedder`).
"""

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from siamese_jax.core.config import Config
from siamese_jax.core.streams import PairsKey
from siamese_jax.evaluation import oneshot
from siamese_jax.evaluation import pairs as evaluation
from siamese_jax.evaluation import plots as plot_lib
from siamese_jax.evaluation.embed import embedder, eval_params
from siamese_jax.evaluation.pairs import evaluate_embedded, pair_distances, to_host_scalars
from siamese_jax.evaluation.retrieval import METRICS as RETRIEVAL_METRICS
from siamese_jax.evaluation.retrieval import retrieval_metrics
from siamese_jax.losses import LOSSES
from siamese_jax.sampling.pairs import make_pairs_within
from siamese_jax.sampling.splits import RunData

GROUP_METRICS = ("accuracy", "roc_auc", "accuracy_at_threshold", *RETRIEVAL_METRICS)
# results.json's fields that only a loss with pair figures (`Loss.pair_metrics`) reports.
PAIR_ONLY = ("train_accuracy", "train_loss", "test_accuracy", "test_loss", "val_accuracy",
             "fixed_threshold", "pairs", "num_train_pairs")  # fmt: skip


Embedder = Callable[[jax.Array], jax.Array]  # uint8[N, H, W] -> float32[N, D]


def embedder_of(states, config: Config) -> Embedder:
  """Trained models' images -> embeddings as `load_trained` gives them (`embed.embedder`)."""
  return embedder(states[0].apply_fn, [eval_params(s) for s in states], config)


def ensemble_evaluation(states, config: Config, run: RunData) -> dict:
  """`final_evaluation` of a --seeds run's models as one, on the first seed's pairs and episodes.

  With --holdout each seed held out its own images, which the others trained
  on: the ensemble then has no validation figures, and its threshold is
  chosen on training pairs.
  """
  if config.holdout:
    run = dataclasses.replace(run, sets=dataclasses.replace(run.sets, val=None))
  embedder = embedder_of(states, config)
  results = final_evaluation(states[0], config, run, "", plots=False, embedder=embedder)
  return {**results, "members": len(states)}


def final_evaluation(
  state, config: Config, run, workdir: str, *, plots: bool = True, embedder: Embedder | None = None
) -> dict:
  """The results dict of a trained state, for JSON (`distances.png` in `workdir` if `plots`).

  `embedder` (default: the state's model, `embedder_of`) embeds every image;
  `state` gives the pair loss's margin and fixed threshold.
  """
  if embedder is None:
    embedder = embedder_of([state], config)
  splits = _on_device(run)
  results, test_d, threshold = pair_results(state, config, run, splits, embedder)
  if not LOSSES[config.loss].pair_metrics:
    # The contrastive loss of the pairs and their accuracy at the fixed
    # threshold mean nothing for this loss: the one-shot and retrieval
    # figures say what it learnt. ROC AUC and the chosen threshold stay.
    for key in PAIR_ONLY:
      results.pop(key, None)
  test_emb = embedder(splits["test"][0])
  results.update(_prefixed("test_", retrieval_metrics(test_emb, run.sets.test.labels)))
  val_emb = None
  if "val" in splits:
    val_emb = embedder(splits["val"][0])
    results.update(_prefixed("val_", retrieval_metrics(val_emb, run.sets.val.labels)))
  if config.train_classes is not None:
    results.update(group_results(config, run, test_emb, threshold))
  for prefix, split, emb in (("test_", run.sets.test, test_emb), ("val_", run.sets.val, val_emb)):
    if split is not None and split.groups is not None:
      key = jax.random.fold_in(
        run.keys.pairs, PairsKey.TEST_EPISODES if prefix == "test_" else PairsKey.VAL_EPISODES
      )
      results.update(
        oneshot.oneshot_metrics(
          np.asarray(emb), split.labels, split.groups, split.drawers, key, prefix=prefix
        )
      )
  if plots:
    if plot_lib.have_matplotlib():
      plot_lib.distance_histograms(
        test_d,
        run.sets.test.y,
        os.path.join(workdir, "distances.png"),
        {f"fixed ({config.threshold})": config.threshold, "chosen": threshold},
        title=f"Test-pair distances (ROC AUC {results['test_roc_auc']:.4f})",
      )
    else:
      print("note: matplotlib is not installed; distances.png skipped.", file=sys.stderr)
  return results


def _on_device(run: RunData) -> dict[str, tuple]:
  """{split name: (images, pairs, y)} on this process's first device."""
  device = jax.local_devices()[0]
  names = {"train": run.sets.train, "test": run.sets.test, "val": run.sets.val}
  return {
    name: jax.device_put((s.images, s.pairs, s.y), device)
    for name, s in names.items()
    if s is not None
  }


def _prefixed(prefix: str, metrics: dict) -> dict:
  renamed = {"num_queries": "retrieval_queries", "skipped_queries": "retrieval_skipped_queries"}
  return {prefix + renamed.get(k, k): v for k, v in metrics.items()}


class PairResults(NamedTuple):
  """What `pair_results` returns."""

  results: dict  # the pair metrics and the run's facts, for results.json
  test_distances: np.ndarray  # float[P] of the test pairs
  threshold: float  # chosen on validation pairs (else training pairs), never test


def pair_results(state, config: Config, run: RunData, splits, embedder: Embedder) -> PairResults:
  """The original's pair metrics and an honestly chosen threshold (`splits` from `_on_device`)."""
  sets = run.sets

  def evaluate(images, pairs, y):
    return evaluate_embedded(state, embedder(images), pairs, y)

  results = {}
  # The training pairs give the pair loss's figures, or the threshold of a
  # run without validation; else nothing reads them, and embedding every
  # training image (5 times with test-time shifts) would be wasted.
  if LOSSES[config.loss].pair_metrics or "val" not in splits:
    train_m, train_d = evaluate(*splits["train"])
    train_m = to_host_scalars(train_m)
    results.update({"train_accuracy": train_m["accuracy"], "train_loss": train_m["loss"]})
  test_m, test_d = evaluate(*splits["test"])
  test_m = to_host_scalars(test_m)
  test_d = np.asarray(test_d)
  results |= {
    "test_accuracy": test_m["accuracy"],
    "test_loss": test_m["loss"],
    "test_roc_auc": evaluation.roc_auc(test_d, sets.test.y),
  }
  if "val" in splits:
    val_m, val_d = evaluate(*splits["val"])
    choose_d, choose_y, source = np.asarray(val_d), sets.val.y, "held-out validation pairs"
    results["val_accuracy"] = to_host_scalars(val_m)["accuracy"]
    results["val_roc_auc"] = evaluation.roc_auc(choose_d, choose_y)
  else:
    choose_d, choose_y, source = np.asarray(train_d), sets.train.y, "training pairs"
  threshold, chosen_acc = evaluation.best_threshold(choose_d, choose_y)
  results.update(
    {
      "threshold": threshold,
      "threshold_source": source,
      "accuracy_at_threshold_where_chosen": chosen_acc,
      "test_accuracy_at_threshold": evaluation.accuracy_at(test_d, sets.test.y, threshold),
      "fixed_threshold": config.threshold,
      "epochs": config.epochs,
      "seed": config.seed,
      "pairs": config.pairs,
      "holdout": config.holdout,
      "encoder": config.encoder,
      "num_train_pairs": len(sets.train.pairs),
      "num_test_pairs": len(sets.test.pairs),
      "num_val_pairs": 0 if sets.val is None else len(sets.val.pairs),
      "image_shape": list(sets.test.images.shape[1:]),
      "num_classes": run.num_classes,
      "backend": jax.default_backend(),
      "num_devices": len(jax.devices()),
      "num_processes": jax.process_count(),
      # The matmul routes, hence the rounding (see siamese_jax/xla_flags.py).
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
  )
  return PairResults(results, test_d, threshold)


def group_results(config: Config, run: RunData, test_emb, threshold: float) -> dict:
  """Every test metric for the seen and unseen classes (no pair metrics for one class)."""
  test = run.sets.test
  class_ids = test.classes[test.labels]  # original class id of each test image
  seen = np.isin(class_ids, config.train_classes)
  results = {}
  for name, members, stream in (
    ("seen", seen, PairsKey.SEEN_PAIRS),
    ("unseen", ~seen, PairsKey.UNSEEN_PAIRS),
  ):
    idx = np.flatnonzero(members)
    out = dict.fromkeys(GROUP_METRICS)
    out["images"] = len(idx)
    out["classes"] = [int(c) for c in np.unique(class_ids[idx])]
    if len(idx):
      out.update(
        {m: v for m, v in retrieval_metrics(test_emb[idx], class_ids[idx]).items() if m in out}
      )
    if len(out["classes"]) >= 2:
      key = jax.random.fold_in(run.keys.pairs, stream)
      pairs, y = make_pairs_within(key, class_ids[idx])
      d = np.asarray(pair_distances(test_emb, idx[pairs]))
      out["accuracy"] = evaluation.accuracy_at(d, y, config.threshold)
      out["roc_auc"] = evaluation.roc_auc(d, y)
      out["accuracy_at_threshold"] = evaluation.accuracy_at(d, y, threshold)
      out["pairs"] = len(y)
    results.update({f"test_{name}_{k}": v for k, v in out.items()})
  return results
