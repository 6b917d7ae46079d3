"""Losses of embeddings, and the one distance they are measured with (`distances.py`:
the definition, its pairwise form and the exact blocked search).
"""

from siamese_jax.losses.contrastive import contrastive_loss, pair_accuracy
from siamese_jax.losses.distances import DISTANCE_EPS, euclidean_distance
