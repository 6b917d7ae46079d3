"""What the proxy losses share: cosines to the proxies, and a cross-entropy over classes.

A proxy loss learns one vector per training class, its proxy p_c (a [C, D]
parameter the train state holds beside the network's), and pulls each
embedding towards its own class's proxy instead of towards other images.
It needs labels in [0, C), not class-balanced batches.

* `cosines(x, p)`: float[N, C], s_ic = x_i . p_c / (||x_i|| ||p_c||), each
  norm clamped away from 0 (`batch.normalize`);
* `class_cross_entropy(logits, labels, proxy_mask)`: the mean over i of
  -log softmax_c(logits_i)[y_i], over the classes `proxy_mask` keeps.

`proxy_mask` (bool[C], None: every class) drops classes without a proxy:
validation batches hold classes the run never trained, so a run is validated
on proxies made from each batch's own class means (`batch_proxies`), padded
to a static size.
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
  """Proxies made from a batch alone: each class's mean unit embedding.

  For validating on classes the run never trained (their proxies do not
  exist). Labels are renumbered by first appearance; the proxies are padded
  to N rows, the padding masked out.

  Returns:
    {"labels": int32[N] in [0, N), "proxies": float[N, D], "proxy_mask": bool[N]}.
  """
  n = labels.shape[0]
  same = labels[:, None] == labels[None, :]
  first = jnp.argmax(same, axis=1).astype(jnp.int32)  # the first image of i's class
  z = normalize(embeddings)
  sums = jnp.zeros_like(z).at[first].add(z)
  counts = jnp.zeros((n,), z.dtype).at[first].add(1.0)
  mask = counts > 0
  proxies = sums / jnp.maximum(counts, 1.0)[:, None]
  return {"labels": first, "proxies": proxies, "proxy_mask": mask}


def init_proxies(class_means: jax.Array) -> dict[str, jax.Array]:
  """{"proxies": float32[C, D]}: each class's proxy starts at its images' mean unit embedding.

  Not at random: a fresh encoder's embeddings of similar images are nearly
  parallel, and random proxies far from them make the loss's gradient one
  shift of every embedding, which collapses them (docs/losses.md has the
  measurements). Proxies that start at their class's mean make the
  gradient the classes' differences.
  """
  return {"proxies": jnp.asarray(class_means, jnp.float32)}
