"""What the proxy losses share: cosines to the proxies, and a cross-entropy over classes.

A proxy loss learns a vector per training class, its proxy p_c (a [C, D]
parameter beside the network's), and pulls each embedding towards its own
class's proxy. It needs labels in [0, C), not class-balanced batches.
`cosines(x, p)` is float[N, C] of unit vectors (norms clamped from 0);
`class_cross_entropy(logits, labels, proxy_mask)` the mean of -log softmax
at the label over the classes `proxy_mask` keeps (validation classes were
never trained, so `batch_proxies` stands in for them, padded to a static size).
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses.batch import check, normalize

# A logit that exp() sends to exactly 0, with a finite gradient (-inf has none).
MASKED = -1e9


def check_proxies(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, name: str):
  check(embeddings, labels, name)
  if proxies.ndim != 2 or proxies.shape[1] != embeddings.shape[1]:
    raise ValueError(
      f"{name} needs proxies (C, D) with the embeddings' D={embeddings.shape[1]}, "
      f"got {proxies.shape}."
    )


def cosines(embeddings: jax.Array, proxies: jax.Array) -> jax.Array:
  """float[N, C]: the cosine of every embedding with every proxy."""
  return normalize(embeddings) @ normalize(proxies).T


def class_cross_entropy(
  logits: jax.Array, labels: jax.Array, proxy_mask: jax.Array | None = None
) -> jax.Array:
  """float[]: mean over i of -log softmax(logits_i)[y_i]; logits float[N, C], labels int[N]."""
  if proxy_mask is not None:
    logits = jnp.where(proxy_mask[None, :], logits, MASKED)
  true = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - true)


def batch_proxies(embeddings: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Each class's mean unit embedding of the batch, as proxies for classes never trained.

  Labels are renumbered by first appearance; the proxies are padded to N rows
  and masked: {"labels": int32[N], "proxies": float[N, D], "proxy_mask": bool[N]}.
  """
  same = labels[:, None] == labels[None, :]
  first = jnp.argmax(same, axis=1).astype(jnp.int32)  # the first image of i's class
  proxies, counts = mean_per_class(normalize(embeddings), first, labels.shape[0])
  return {"labels": first, "proxies": proxies, "proxy_mask": counts > 0}


def mean_per_class(z: jax.Array, labels: jax.Array, num_classes: int):
  """(float[C, D] class means of z float[N, D], float[C] counts); labels int[N] in [0, C)."""
  sums = jax.ops.segment_sum(z, labels, num_classes)
  counts = jax.ops.segment_sum(jnp.ones(labels.shape, z.dtype), labels, num_classes)
  return sums / jnp.maximum(counts, 1.0)[:, None], counts


def init_proxies(class_means: jax.Array) -> dict[str, jax.Array]:
  """{"proxies": float32[C, D]}: each class's proxy starts at its images' mean unit embedding.

  A fresh encoder's embeddings are nearly parallel; random proxies far from
  them make the gradient one shift of every embedding, which collapses them
  (docs/losses.md). Proxies at the class means make it the classes' differences.
  """
  return {"proxies": jnp.asarray(class_means, jnp.float32)}
