"""Random affine distortions of a batch, on the device, inside the jitted step.

Koch, Zemel & Salakhutdinov (2015)'s ranges at `strength` 1: rotation in
[-10, 10] degrees, shear in [-0.3, 0.3], scale in [0.8, 1.2], translation in
[-2, 2] of 105 pixels (here 2/105 of the side), each applied with
probability 1/2 per image; `strength` scales the ranges (0 is exactly the
identity). Pixels are read bilinearly, zero outside; the key is the step's,
so the same (run, step) gives bitwise the same images.
"""

import math

import jax
import jax.numpy as jnp

MAX_DEGREES = 10.0
MAX_SHEAR = 0.3
MAX_SCALE = 0.2  # s in [1 - 0.2, 1 + 0.2]
MAX_SHIFT = 2.0 / 105.0  # of the image's side


def affine_matrices(key: jax.Array, n: int, strength: float) -> tuple[jax.Array, jax.Array]:
  """n distortions: (float[n, 2, 2] rotation @ shear @ scale, float[n, 2] shifts)."""
  k_on, k_rot, k_shear, k_scale, k_shift = jax.random.split(key, 5)
  on = jax.random.bernoulli(k_on, 0.5, (n, 4)).astype(jnp.float32)

  def u(k, shape, bound):
    return jax.random.uniform(k, shape, jnp.float32, -bound, bound) * strength

  theta = u(k_rot, (n,), math.radians(MAX_DEGREES)) * on[:, 0]
  shear = u(k_shear, (n, 2), MAX_SHEAR) * jnp.repeat(on[:, 1:2], 2, 1)
  scale = 1.0 + u(k_scale, (n, 2), MAX_SCALE) * jnp.repeat(on[:, 2:3], 2, 1)
  shift = u(k_shift, (n, 2), MAX_SHIFT) * jnp.repeat(on[:, 3:4], 2, 1)
  c, s = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)
  one, zero = jnp.ones((n,)), jnp.zeros((n,))
  shearing = jnp.stack([jnp.stack([one, shear[:, 0]], -1), jnp.stack([shear[:, 1], one], -1)], -2)
  scaling = jnp.stack([jnp.stack([scale[:, 0], zero], -1), jnp.stack([zero, scale[:, 1]], -1)], -2)
  return rotation @ shearing @ scaling, shift


def warp(images: jax.Array, linear: jax.Array, shift: jax.Array) -> jax.Array:
  """float[n, H, W] -> float[n, H, W]: p read at linear @ (p - c) + c + shift * (H, W).

  With the identity every weight is 0 or 1, so the images come back bitwise.
  """
  n, h, w = images.shape
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                            indexing="ij")  # fmt: skip
  centre = jnp.array([[(h - 1) / 2, (w - 1) / 2]], jnp.float32)  # (1, 2)
  grid = jnp.stack([rows, cols], -1).reshape(-1, 2) - centre  # (H*W, 2)
  offset = centre + shift * jnp.array([[h, w]], jnp.float32)  # (n, 2)
  src = jnp.einsum("nij,pj->npi", linear, grid) + offset[:, None, :]  # (n, H*W, 2)
  y, x = src[..., 0], src[..., 1]  # (n, H*W)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  wy, wx = y - y0, x - x0
  flat = images.reshape(n, h * w)
  out = jnp.zeros((n, h * w), images.dtype)
  for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                         (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):  # fmt: skip
    yy, xx = y0 + dy, x0 + dx
    inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
    idx = (jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)).astype(jnp.int32)
    out = out + jnp.where(inside, weight * jnp.take_along_axis(flat, idx, axis=1), 0.0)
  return out.reshape(n, h, w)


def augment(key: jax.Array, images: jax.Array, strength: float) -> jax.Array:
  """float[n, H, W] images, each under its own random distortion (see the module doc)."""
  linear, shift = affine_matrices(key, images.shape[0], strength)
  return warp(images, linear, shift)
