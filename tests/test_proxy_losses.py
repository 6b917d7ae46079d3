"""The proxy losses: each against a NumPy transcription of its paper's formula,
finite on awkward batches, and their proxies as a run holds and trains them."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax.core.config import Config
from siamese_jax.losses import PROXY_LOSSES
from siamese_jax.losses.proxies import batch_proxies

from conftest import checkpoint_state, jsonl, synthetic_mnist


def unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def log_softmax_at(logits, y):
  m = logits.max(axis=1, keepdims=True)
  lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
  return logits[np.arange(len(y)), y] - lse


def proxy_nca_np(e, y, p, temperature=1 / 9):
  d2 = ((unit(e)[:, None, :] - unit(p)[None, :, :]) ** 2).sum(-1)
  return -np.mean(log_softmax_at(-d2 / temperature, y))


def proxy_anchor_np(e, y, p, alpha=32.0, delta=0.1):
  s = unit(e) @ unit(p).T
  present = sorted(set(y.tolist()))
  pos = np.mean([np.log1p(np.exp(-alpha * (s[y == c, c] - delta)).sum()) for c in present])
  neg = np.mean([np.log1p(np.exp(alpha * (s[y != c, c] + delta)).sum()) for c in range(len(p))])
  return pos + neg


def normalized_softmax_np(e, y, p, temperature=0.05):
  return -np.mean(log_softmax_at(unit(e) @ unit(p).T / temperature, y))


def cosface_np(e, y, p, scale=64.0, margin=0.35):
  s = unit(e) @ unit(p).T
  s[np.arange(len(y)), y] -= margin
  return -np.mean(log_softmax_at(scale * s, y))


def arcface_np(e, y, p, scale=64.0, margin=0.5):
  s = unit(e) @ unit(p).T
  theta = np.arccos(np.clip(s[np.arange(len(y)), y], -1 + 1e-7, 1 - 1e-7))
  s[np.arange(len(y)), y] = np.cos(theta + margin)
  return -np.mean(log_softmax_at(scale * s, y))


REFERENCE = {
  "proxy-nca": proxy_nca_np,
  "proxy-anchor": proxy_anchor_np,
  "normalized-softmax": normalized_softmax_np,
  "cosface": cosface_np,
  "arcface": arcface_np,
}
PARAMS = {  # a second setting of each loss's parameters
  "proxy-nca": {"temperature": 0.3},
  "proxy-anchor": {"alpha": 16.0, "delta": 0.2},
  "normalized-softmax": {"temperature": 0.2},
  "cosface": {"scale": 16.0, "margin": 0.2},
  "arcface": {"scale": 16.0, "margin": 0.3},
}


def batch(seed, n=24, d=8, classes=6):
  """A batch of `classes` classes, and two proxies more: classes absent from it."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n).astype(np.int32)
  p = rng.normal(size=(classes + 2, d)).astype(np.float32)
  e = (0.5 * rng.normal(size=(n, d)) + p[y]).astype(np.float32)
  return e, y, p


def test_the_table_holds_the_five_proxy_losses():
  assert set(PROXY_LOSSES) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("seed", [0, 1])
def test_each_proxy_loss_is_its_definition(name, seed):
  e, y, p = batch(seed)
  for params in ({}, PARAMS[name]):
    got = float(jax.jit(lambda e, y, p, k=params: PROXY_LOSSES[name](e, y, p, **k))(e, y, p))
    want = REFERENCE[name](e.astype(np.float64), y, p.astype(np.float64), **params)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (name, params)


def awkward():
  rng = np.random.default_rng(3)
  p = rng.normal(size=(5, 4)).astype(np.float32)
  cases = {
    # Class 4 has one image; classes 1 and 3 none.
    "a class of one, classes absent": (
      rng.normal(size=(7, 4)).astype(np.float32),
      np.array([0, 0, 2, 2, 2, 0, 4], np.int32),
      p,
    ),
    # Every embedding exactly on its proxy: arccos at 1, the clip's edge.
    "on their proxies": (3 * p[[0, 1, 2, 3, 4, 0]], np.array([0, 1, 2, 3, 4, 0], np.int32), p),
  }
  big = rng.normal(size=(1000, 16)).astype(np.float32)
  labels = rng.integers(0, 1000, 64).astype(np.int32)
  cases["1,000 classes"] = (big[labels] + rng.normal(size=(64, 16)).astype(np.float32), labels, big)
  return cases


AWKWARD = awkward()


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("case", sorted(AWKWARD))
def test_finite_with_finite_gradients_on_awkward_batches(name, case):
  e, y, p = AWKWARD[case]
  fn = PROXY_LOSSES[name]
  value, (ge, gp) = jax.value_and_grad(fn, argnums=(0, 2))(jnp.asarray(e), jnp.asarray(y), p)
  assert np.isfinite(float(value)), (name, case)
  assert np.isfinite(np.asarray(ge)).all() and np.isfinite(np.asarray(gp)).all(), (name, case)
  # In float32, as the loss computes: at a cosine of 1, arcface's clip to
  # 1 - 1e-7 is 1 - 1.19e-7 in float32, and its angle differs from float64's.
  want = REFERENCE[name](e, y, p)
  assert float(value) == pytest.approx(want, rel=1e-4, abs=1e-5), (name, case)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_a_validation_batch_is_scored_on_its_own_class_means(name):
  # The stand-in proxies, padded and masked, give what the compact proxies give.
  e, y, _ = batch(4)
  y = y * 7 + 3  # labels of classes the run never trained
  stand_in = batch_proxies(jnp.asarray(e), jnp.asarray(y))
  got = float(PROXY_LOSSES[name](e, stand_in.pop("labels"), **stand_in))
  classes = sorted(set(y.tolist()), key=list(y).index)  # by first appearance
  dense = np.array([classes.index(c) for c in y])
  means = np.stack([unit(e.astype(np.float64))[y == c].mean(0) for c in classes])
  assert got == pytest.approx(
    REFERENCE[name](e.astype(np.float64), dense, means), rel=1e-4, abs=1e-6
  )


def test_the_proxies_learn_at_their_multiple_of_the_rate_and_the_network_as_before():
  import optax

  from siamese_jax.training import make_optimizer

  params = {"encoder": {"w": jnp.ones((5,))}, "loss": {"proxies": jnp.ones((3, 4))}}
  grads = jax.tree.map(lambda x: jnp.linspace(-1, 1, x.size).reshape(x.shape), params)
  for optimizer, plain in (("rmsprop", optax.rmsprop(1e-3, decay=0.9, eps=1e-7)),
                           ("adam", optax.adam(1e-3))):  # fmt: skip
    tx = make_optimizer(Config(loss="cosface", optimizer=optimizer, proxy_lr_multiplier=50.0))
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_array_equal(got["encoder"]["w"], want["encoder"]["w"])
    np.testing.assert_allclose(got["loss"]["proxies"], 50 * want["loss"]["proxies"], rtol=1e-6)


def test_each_proxy_starts_at_its_class_mean_unit_embedding():
  from siamese_jax.training import create_train_state

  config = Config(loss="proxy-anchor", hidden_sizes=(16, 8))
  data = synthetic_mnist(n_train=60, n_test=10)
  labels = data.train_labels.astype(np.int32) % 6  # 6 classes
  state = create_train_state(jax.random.key(0), config, classes=(data.train_images, labels))
  proxies = np.asarray(state.params["loss"]["proxies"])
  assert proxies.shape == (6, 8)
  # By hand: the initialized network's embeddings, unit length, averaged per class.
  network = {k: v for k, v in state.params.items() if k != "loss"}
  x = jnp.asarray(data.train_images, jnp.float32) / 255.0
  e = np.asarray(state.apply_fn({"params": network}, x, method="embed"), np.float64)
  z = e / np.linalg.norm(e, axis=1, keepdims=True)
  want = np.stack([z[labels == c].mean(axis=0) for c in range(6)])
  np.testing.assert_allclose(proxies, want, rtol=1e-5, atol=1e-6)
  # The network's parameters are drawn as for any loss.
  plain = create_train_state(jax.random.key(0), Config(loss="supcon", hidden_sizes=(16, 8)))
  assert "loss" not in plain.params
  jax.tree.map(np.testing.assert_array_equal, plain.params, network)
  with pytest.raises(ValueError, match="classes="):
    create_train_state(jax.random.key(0), config)


@pytest.mark.slow
def test_a_proxy_run_learns_and_its_seeds_and_sweep_equal_their_runs(tmp_path):
  from siamese_jax import load_trained, train_and_evaluate

  data = synthetic_mnist(n_train=600, n_test=100)
  config = Config(loss="proxy-anchor", epochs=2, classes_per_batch=8, samples_per_class=8)
  kw = {"plots": False, "progress": False}
  train_and_evaluate(config, tmp_path / "seeds", data, seeds=[0, 1], **kw)
  results = train_and_evaluate(config.__class__(**{**config.to_dict(), "seed": 1}),
                               tmp_path / "one", data, **kw)  # fmt: skip
  assert results["test_precision_at_1"] > 0.9
  losses = [x["train_loss"] for x in jsonl(tmp_path / "one/metrics.jsonl")]
  assert losses[-1] < losses[0], losses

  def same(a, b):
    strip = [
      {k: v for k, v in x.items() if k != "epoch_seconds"} for x in jsonl(a / "metrics.jsonl")
    ]
    assert strip == [{k: v for k, v in x.items() if k != "epoch_seconds"}
                     for x in jsonl(b / "metrics.jsonl")]  # fmt: skip
    assert checkpoint_state(a / "checkpoint.msgpack") == checkpoint_state(b / "checkpoint.msgpack")

  same(tmp_path / "seeds/seed_1", tmp_path / "one")
  train_and_evaluate(config, tmp_path / "sweep", data, sweep=("learning_rate", [1e-3, 3e-3]), **kw)
  train_and_evaluate(config.__class__(**{**config.to_dict(), "learning_rate": 3e-3}),
                     tmp_path / "lr", data, **kw)  # fmt: skip
  same(tmp_path / "sweep/learning_rate_0.003/seed_0", tmp_path / "lr")
  # The model one embeds with is the encoder alone.
  model = load_trained(tmp_path / "one")
  assert "loss" not in model.params
  assert model.embed(data.test_images[:3]).shape == (3, 128)
  assert json.loads((tmp_path / "one/config.json").read_text())["loss"] == "proxy-anchor"
