"""`prototypical_loss`: Snell et al. 2017's episodic loss, on the classes of a batch.

Each class with at least `num_support` examples takes part: its first
`num_support` examples in batch order are its support, their mean its
prototype, and its other examples are queries. The loss is the mean over
the queries of the cross-entropy of softmax(-||q - prototype||^2) over the
classes taking part; 0 if there is no query.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, masked_mean


def prototypical_loss(embeddings: jax.Array, labels: jax.Array, num_support: int = 1):
  """float[]: see the module docstring. embeddings float[N, D], labels int[N]."""
  check(embeddings, labels, "prototypical_loss")
  n = labels.shape[0]
  same = labels[:, None] == labels[None, :]
  before = jnp.tril(jnp.ones((n, n), bool), k=-1)  # j earlier in the batch than i
  rank = jnp.sum(same & before, axis=1)  # i's position within its class
  count = jnp.sum(same, axis=1)
  support = rank < num_support
  # Prototype of i's class, for every i: the mean of its class's support.
  weights = (same & support[None, :]).astype(embeddings.dtype) / num_support
  prototypes = weights @ embeddings  # [N, D]
  # The classes taking part, each represented by its first example.
  candidate = (rank == 0) & (count >= num_support)
  sq = jnp.sum(jnp.square(embeddings[:, None, :] - prototypes[None, :, :]), axis=-1)  # [q, c]
  logits = jnp.where(candidate[None, :], -sq, -jnp.inf)
  own = jnp.sum(jnp.where(same & candidate[None, :], logits, 0.0), axis=1)
  query = rank >= num_support
  safe = jnp.where(query[:, None], logits, 0.0)  # no query row is all -inf
  cross_entropy = jax.nn.logsumexp(safe, axis=1) - own
  return masked_mean(cross_entropy, query)
