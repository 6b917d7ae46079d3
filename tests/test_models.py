"""The shared MLP: parameter count, one parameter tree, symmetry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import Config, create_train_state
from siamese_jax.models.conv4 import Conv4


def test_parameter_count_is_the_originals():
  state = create_train_state(jax.random.key(0), Config())
  # 784*128+128 + 128*128+128 + 128*128+128
  assert sum(p.size for p in jax.tree.leaves(state.params)) == 133_504


def test_one_parameter_tree_serves_both_inputs():
  state = create_train_state(jax.random.key(0), Config())
  assert list(state.params) == ["encoder"]
  assert sorted(state.params["encoder"]) == ["Dense_0", "Dense_1", "Dense_2"]


def test_distance_is_symmetric_and_zero_for_same_image():
  state = create_train_state(jax.random.key(0), Config())
  x = jax.random.uniform(jax.random.key(1), (8, 784))
  z = jax.random.uniform(jax.random.key(2), (8, 784))
  d_xz = state.apply_fn({"params": state.params}, x, z, train=False)
  d_zx = state.apply_fn({"params": state.params}, z, x, train=False)
  np.testing.assert_allclose(d_xz, d_zx, rtol=1e-6)
  d_xx = state.apply_fn({"params": state.params}, x, x, train=False)
  np.testing.assert_allclose(d_xx, np.sqrt(1e-7), rtol=1e-5)


def test_images_may_come_as_28x28():
  state = create_train_state(jax.random.key(0), Config())
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28))
  z = jax.random.uniform(jax.random.key(2), (4, 28, 28))
  d_img = state.apply_fn({"params": state.params}, x, z, train=False)
  d_flat = state.apply_fn({"params": state.params}, x.reshape(4, -1), z.reshape(4, -1), train=False)
  np.testing.assert_array_equal(d_img, d_flat)


def test_conv4_normalises_each_pixel_or_each_image_as_asked():
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16))

  def first_norm(norm_over):
    model = Conv4(channels=8, embed_dim=4, norm_over=norm_over)
    variables = model.init(jax.random.key(0), x, train=False)
    _, found = model.apply(variables, x, train=False, capture_intermediates=True)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, base)  # same params
    return np.asarray(found["intermediates"]["norm_0"]["__call__"][0])  # [2, 16, 16, 8]

  base = Conv4(channels=8, embed_dim=4).init(jax.random.key(0), x, train=False)
  pixels, images = first_norm("channels"), first_norm("image")
  # At initialisation (scale 1, bias 0) a norm's output has mean 0 and variance 1 over its axes.
  np.testing.assert_allclose(pixels.mean(axis=-1), 0, atol=1e-5)
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-5)
  np.testing.assert_allclose(images.var(axis=(1, 2, 3)), 1, atol=1e-3)
  assert np.abs(images.mean(axis=-1)).max() > 0.1  # not per pixel


@pytest.mark.slow
def test_conv4_four_blocks_to_an_embedding():
  config = Config(encoder="conv4", hidden_sizes=(32, 16), final_relu=False, dropout=0.0)
  state = create_train_state(jax.random.key(0), config, image_shape=(28, 28))
  enc = state.params["encoder"]
  assert sorted(enc) == ["Dense_0", *(f"conv_{i}" for i in range(4)),
                         *(f"norm_{i}" for i in range(4))]  # fmt: skip
  assert enc["conv_0"]["kernel"].shape == (9, 32) and enc["conv_3"]["kernel"].shape == (288, 32)
  # 28 -> 14 -> 7 -> 3 -> 1: a 1x1x32 map into the 16-d embedding.
  assert enc["Dense_0"]["kernel"].shape == (32, 16)
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28))
  e = state.apply_fn({"params": state.params}, x, method="embed")
  assert e.shape == (3, 16) and float(e.min()) < 0  # no final ReLU
  # Larger characters keep a larger map: 56 -> 3x3x32.
  big = create_train_state(jax.random.key(0), config, image_shape=(56, 56))
  assert big.params["encoder"]["Dense_0"]["kernel"].shape == (288, 16)
  # One width per block: block i's windows hold 9 x block (i-1)'s channels.
  per_block = Config(encoder="conv4", hidden_sizes=(8, 16, 24, 32, 16), final_relu=False)
  enc = create_train_state(jax.random.key(0), per_block, image_shape=(28, 28)).params["encoder"]
  kernels = [enc[f"conv_{i}"]["kernel"].shape for i in range(4)]
  assert kernels == [(9, 8), (72, 16), (144, 24), (216, 32)]
  assert enc["Dense_0"]["kernel"].shape == (32, 16)
  with pytest.raises(ValueError, match=r"hidden_sizes=\(8, 16, 16\) is invalid: conv4 takes"):
    Config(encoder="conv4", hidden_sizes=(8, 16, 16))


@pytest.mark.slow
def test_embedding_chunks_fit_the_memory_budget():
  from siamese_jax.evaluation.embed import embed_chunk_size, embed_images

  mlp = create_train_state(jax.random.key(0), Config())
  conv = create_train_state(jax.random.key(0), Config(encoder="conv4", hidden_sizes=(128,)))
  assert embed_chunk_size(mlp.apply_fn, mlp.params, (28, 28)) == 2048
  small = embed_chunk_size(conv.apply_fn, conv.params, (28, 28))
  assert 16 <= small <= 512  # ~0.9 MB per image: 2,048 would take 1.8 GB
  x = np.asarray(jax.random.randint(jax.random.key(2), (300, 28, 28), 0, 256), np.uint8)
  np.testing.assert_allclose(embed_images(conv, x), embed_images(conv, x, chunk=300), atol=2e-5)


@pytest.mark.slow
def test_the_stage_benchmark_times_the_library_encoder():
  # benchmarks.conv4_stages builds its own copy of Conv4 to time its
  # variants: its "encoder" and "first_32" must hold the library's weights.
  from benchmarks.conv4_stages import VARIANTS, Encoder
  from siamese_jax.models.conv4 import Conv4

  x = np.zeros((1, 28, 28), np.float32)

  def shapes(params):
    return sorted(leaf.shape for leaf in jax.tree.leaves(params))

  for variant, channels in (("encoder", 64), ("first_32", (32, 64, 64, 64))):
    ours = Conv4(channels=channels).init(jax.random.key(0), x, train=False)
    assert shapes(Encoder(variant).init(jax.random.key(0), x)) == shapes(ours), variant
  for variant in VARIANTS:
    params = Encoder(variant).init(jax.random.key(0), x)
    assert Encoder(variant).apply(params, x).shape == (1, 128), variant
