"""Losses of embeddings, and the one distance they are measured with (`distances.py`).

`contrastive.py` is the original's pair loss of (d, y); the batch losses
(one file each, sharing `batch.py`) are pure functions of (embeddings,
labels), finite on any batch; the proxy losses (sharing `proxies.py`) take
a proxy per class too. `table.py` holds `LOSSES`, all the core knows of each.
"""

from siamese_jax.losses.arcface import arcface_loss
from siamese_jax.losses.batch import nearest_neighbour_accuracy
from siamese_jax.losses.batch_contrastive import batch_contrastive_loss
from siamese_jax.losses.contrastive import contrastive_loss, pair_accuracy
from siamese_jax.losses.cosface import cosface_loss
from siamese_jax.losses.distances import DISTANCE_EPS, euclidean_distance
from siamese_jax.losses.multi_similarity import multi_similarity_loss
from siamese_jax.losses.normalized_softmax import normalized_softmax_loss
from siamese_jax.losses.prototypical import prototypical_loss
from siamese_jax.losses.proxy_anchor import proxy_anchor_loss
from siamese_jax.losses.proxy_nca import proxy_nca_loss
from siamese_jax.losses.supcon import supcon_loss
from siamese_jax.losses.table import LEARNED, LOSSES, Learned, Loss
from siamese_jax.losses.triplet import triplet_batch_hard_loss, triplet_semi_hard_loss

# The losses of P x K batches, `loss(embeddings float[N, D], labels int[N], **params) -> float[]`.
BATCH_LOSSES = {
  name: loss.fn for name, loss in LOSSES.items() if loss.sampler == "pk" and loss.learned is None
}
# The proxy losses, `loss(embeddings float[N, D], labels int[N], proxies float[C, D], **params)`.
PROXY_LOSSES = {name: loss.fn for name, loss in LOSSES.items() if loss.learned is not None}
