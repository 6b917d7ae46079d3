"""How good an embedding is: the one embedder, pair and retrieval metrics, one-shot
episodes and Lake's official runs, what a finished run reports, the plots.
"""

from siamese_jax.evaluation.embed import embed, embed_chunk_size, embed_images
from siamese_jax.evaluation.pairs import (
  accuracy_at,
  best_threshold,
  evaluate,
  evaluate_embedded,
  pair_distances,
  roc_auc,
  to_host_scalars,
)
from siamese_jax.evaluation.retrieval import retrieval_metrics
