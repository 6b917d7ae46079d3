"""Losses of embeddings, and the one distance they are measured with (`distances.py`:
the definition, its pairwise form and the exact blocked search).

`contrastive.py` is the original's pair loss, a function of (d, y). The
batch losses (one file each, `BATCH_LOSSES` below) learn from every pair of
a batch: pure functions of (embeddings, labels), jittable, finite with a
finite gradient on any batch (`batch.py` holds what they share).
"""

from siamese_jax.losses.batch import nearest_neighbour_accuracy
from siamese_jax.losses.batch_contrastive import batch_contrastive_loss
from siamese_jax.losses.contrastive import contrastive_loss, pair_accuracy
from siamese_jax.losses.distances import DISTANCE_EPS, euclidean_distance
from siamese_jax.losses.multi_similarity import multi_similarity_loss
from siamese_jax.losses.prototypical import prototypical_loss
from siamese_jax.losses.supcon import supcon_loss
from siamese_jax.losses.triplet import triplet_batch_hard_loss, triplet_semi_hard_loss

# Batch losses, `loss(embeddings float[N, D], labels int[N], **params) -> float[]`,
# by the name a flag will give them. A new one is a file and a line here.
BATCH_LOSSES = {
  "batch-contrastive": batch_contrastive_loss,
  "triplet-hard": triplet_batch_hard_loss,
  "triplet-semihard": triplet_semi_hard_loss,
  "multi-similarity": multi_similarity_loss,
  "prototypical": prototypical_loss,
  "supcon": supcon_loss,
}

# Each batch loss's parameters, by the `Config` field that sets each. A
# "margin" comes from the train state (`TrainState.margin`), so that
# `--sweep margin` can vary it per model; the others are static.
LOSS_FIELDS = {
  "batch-contrastive": {"margin": "margin"},
  "triplet-hard": {"margin": "triplet_margin"},
  "triplet-semihard": {"margin": "triplet_margin"},
  "multi-similarity": {"alpha": "ms_alpha", "beta": "ms_beta", "base": "ms_base",
                       "epsilon": "ms_epsilon"},
  "prototypical": {"num_support": "num_support"},
  "supcon": {"temperature": "temperature"},
}  # fmt: skip

# The losses of unit embeddings: the model itself normalizes their output,
# so that every distance it is judged by (episodes, retrieval, galleries) is
# the one the loss trained.
NORMALIZED_LOSSES = ("multi-similarity", "supcon")
