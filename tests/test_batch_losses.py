"""The batch losses against plain NumPy transcriptions of their definitions, and on awkward batches."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import losses
from siamese_jax.losses import BATCH_LOSSES

from conftest import synthetic_mnist

EPS = 1e-7


def d_np(e):
  e = np.asarray(e, np.float64)
  return np.sqrt(np.maximum(((e[:, None] - e[None]) ** 2).sum(-1), EPS))


def z_np(e):
  e = np.asarray(e, np.float64)
  return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def batch_contrastive_np(e, y, margin=1.0):
  d, pos, neg = d_np(e), [], []
  for i, j in itertools.combinations(range(len(y)), 2):
    (pos if y[i] == y[j] else neg).append(d[i, j])
  p = np.mean(np.square(pos)) if pos else 0.0
  n = np.mean(np.square(np.maximum(margin - np.array(neg), 0))) if neg else 0.0
  return p + n


def batch_hard_np(e, y, margin=0.2):
  d, terms = d_np(e), []
  for a in range(len(y)):
    p = [d[a, j] for j in range(len(y)) if j != a and y[j] == y[a]]
    n = [d[a, j] for j in range(len(y)) if y[j] != y[a]]
    if p and n:
      terms.append(max(max(p) - min(n) + margin, 0))
  return np.mean(terms) if terms else 0.0


def semi_hard_np(e, y, margin=0.2):
  d, terms = d_np(e), []
  for a in range(len(y)):
    negs = [n for n in range(len(y)) if y[n] != y[a]]
    if not negs:
      continue
    for p in range(len(y)):
      if p == a or y[p] != y[a]:
        continue
      farther = [d[a, n] for n in negs if d[a, n] > d[a, p]]
      dn = min(farther) if farther else max(d[a, n] for n in negs)
      terms.append(max(d[a, p] - dn + margin, 0))
  return np.mean(terms) if terms else 0.0


def multi_similarity_np(e, y, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
  z = z_np(e)
  s, total = z @ z.T, 0.0
  for i in range(len(y)):
    pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
    neg = [k for k in range(len(y)) if y[k] != y[i]]
    if not pos or not neg:
      continue
    kept_n = [k for k in neg if s[i, k] + epsilon > min(s[i, j] for j in pos)]
    kept_p = [j for j in pos if s[i, j] - epsilon < max(s[i, k] for k in neg)]
    total += np.log1p(sum(np.exp(-alpha * (s[i, j] - base)) for j in kept_p)) / alpha
    total += np.log1p(sum(np.exp(beta * (s[i, k] - base)) for k in kept_n)) / beta
  return total / len(y)


def prototypical_np(e, y, num_support=1):
  e = np.asarray(e, np.float64)
  classes, protos, queries = [], {}, []
  for c in dict.fromkeys(y):  # batch order
    members = [i for i in range(len(y)) if y[i] == c]
    if len(members) >= num_support:
      classes.append(c)
      protos[c] = e[members[:num_support]].mean(0)
      queries += [(i, c) for i in members[num_support:]]
  if not queries:
    return 0.0
  out = []
  for i, c in queries:
    logits = np.array([-((e[i] - protos[k]) ** 2).sum() for k in classes])
    out.append(
      np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[classes.index(c)]
    )
  return np.mean(out)


def supcon_np(e, y, temperature=0.1):
  z = z_np(e)
  s, terms = z @ z.T / temperature, []
  for i in range(len(y)):
    pos = [p for p in range(len(y)) if p != i and y[p] == y[i]]
    if not pos:
      continue
    others = np.array([s[i, a] for a in range(len(y)) if a != i])
    lse = np.log(np.exp(others - others.max()).sum()) + others.max()
    terms.append(-np.mean([s[i, p] - lse for p in pos]))
  return np.mean(terms) if terms else 0.0


REFERENCE = {
  "batch-contrastive": batch_contrastive_np,
  "triplet-hard": batch_hard_np,
  "triplet-semihard": semi_hard_np,
  "multi-similarity": multi_similarity_np,
  "prototypical": prototypical_np,
  "supcon": supcon_np,
}
PARAMS = {  # a second setting of each loss's parameters
  "batch-contrastive": {"margin": 0.7},
  "triplet-hard": {"margin": 0.5},
  "triplet-semihard": {"margin": 0.5},
  "multi-similarity": {"alpha": 1.0, "beta": 20.0, "base": 0.3, "epsilon": 0.2},
  "prototypical": {"num_support": 2},
  "supcon": {"temperature": 0.5},
}


def batch(seed, n=24, d=8, classes=5):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  e = rng.normal(size=(n, d)).astype(np.float32) * 0.5 + y[:, None] * 0.1
  return e, y.astype(np.int32)


@pytest.mark.parametrize("name", sorted(BATCH_LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_each_loss_is_its_definition(name, seed):
  e, y = batch(seed)
  for params in ({}, PARAMS[name]):
    got = float(jax.jit(lambda e, y, p=params: BATCH_LOSSES[name](e, y, **p))(e, y))
    want = REFERENCE[name](e, list(y), **params)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (name, params)


AWKWARD = {
  "one class": (np.arange(12, dtype=np.float32).reshape(6, 2) / 10, [3] * 6),
  "all distinct": (np.arange(12, dtype=np.float32).reshape(6, 2) / 10, [0, 1, 2, 3, 4, 5]),
  "a class of one": (np.arange(12, dtype=np.float32).reshape(6, 2) / 10, [0, 0, 1, 1, 2, 1]),
  "identical rows": (
    np.array([[1, 2], [1, 2], [0, 1], [0, 1], [3, 0], [3, 0]], np.float32),
    [0, 0, 1, 1, 0, 1],
  ),  # fmt: skip
  # All-zero embeddings, as a final ReLU can give: no norm to divide by.
  "zero rows": (
    np.array([[0, 0], [0, 0], [1, 2], [1, 2], [0, 0], [3, 1]], np.float32),
    [0, 0, 1, 1, 2, 2],
  ),
}


@pytest.mark.parametrize("name", sorted(BATCH_LOSSES))
@pytest.mark.parametrize("case", sorted(AWKWARD))
def test_finite_with_a_finite_gradient_on_awkward_batches(name, case):
  e, y = AWKWARD[case]
  y = np.asarray(y, np.int32)
  value, grad = jax.value_and_grad(BATCH_LOSSES[name])(jnp.asarray(e), jnp.asarray(y))
  assert np.isfinite(float(value)), (name, case)
  assert np.isfinite(np.asarray(grad)).all(), (name, case)
  assert float(value) == pytest.approx(REFERENCE[name](e, list(y)), rel=1e-4, abs=1e-6)


def test_empty_sets_add_nothing():
  e = jnp.eye(4, dtype=jnp.float32)
  distinct = jnp.arange(4)
  assert float(losses.triplet_batch_hard_loss(e, distinct)) == 0.0  # no positives
  assert float(losses.supcon_loss(e, distinct)) == 0.0
  assert float(losses.prototypical_loss(e, distinct)) == 0.0  # no queries
  # No negative pairs: only the positive part, mean of d^2.
  same = jnp.zeros(4, jnp.int32)
  assert float(losses.batch_contrastive_loss(e, same)) == pytest.approx(2.0)


def test_shapes_are_checked():
  with pytest.raises(ValueError, match=r"embeddings \(N, D\) and labels \(N,\)"):
    losses.supcon_loss(jnp.zeros((4, 2)), jnp.zeros((4, 1), jnp.int32))


def _toy_centroid_loss(embeddings, labels, temperature=0.1):
  """A loss written for the test: each image's softmax over the batch's class centroids."""
  onehot = jax.nn.one_hot(labels, 10)
  centroids = (onehot.T @ embeddings) / jnp.maximum(onehot.sum(0), 1.0)[:, None]
  d2 = jnp.sum(jnp.square(embeddings[:, None, :] - centroids[None]), axis=-1)
  logits = jnp.where(onehot.sum(0)[None] > 0, -d2 / temperature, -jnp.inf)
  return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, axis=-1))


@pytest.mark.slow
def test_a_new_loss_is_one_table_entry_and_trains_through_the_loop(tmp_path, monkeypatch):
  # docs/losses.md, "Adding a loss": a function and one entry, nothing in training/.
  from siamese_jax import cli, train_and_evaluate
  from siamese_jax.configs import MNIST
  from siamese_jax.losses import LOSSES, Loss

  calls = []

  def toy(embeddings, labels, temperature):
    calls.append(embeddings.shape)  # at trace time: proves the loop called this entry
    return _toy_centroid_loss(embeddings, labels, temperature)

  monkeypatch.setitem(LOSSES, "toy", Loss(toy, "pk", {"temperature": "temperature"}))
  parser = cli.make_parser("t", "t", MNIST)
  config = cli.config_from_args(parser, parser.parse_args(["--loss", "toy", "--epochs", "3",
                                 "--classes-per-batch", "8", "--samples-per-class", "4"]))  # fmt: skip
  data = synthetic_mnist(n_train=600, n_test=100)
  results = train_and_evaluate(config, tmp_path / "w", data, plots=False, progress=False)
  assert (32, 128) in calls
  lines = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  losses = [x["train_loss"] for x in lines]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert results["test_precision_at_1"] > 0.9
  assert json.loads((tmp_path / "w" / "config.json").read_text())["loss"] == "toy"


@pytest.mark.slow
def test_collapsed_embeddings_are_named_at_the_end_of_the_epoch(tmp_path, monkeypatch, capsys):
  from siamese_jax import train_and_evaluate
  from siamese_jax.core.config import Config
  from siamese_jax.losses import LOSSES, Loss

  def shrink(embeddings, labels):  # learns one thing: every embedding to 0
    del labels
    return jnp.mean(jnp.sum(jnp.square(embeddings), axis=1))

  monkeypatch.setitem(LOSSES, "shrink", Loss(shrink, "pk"))
  config = Config(loss="shrink", epochs=2, classes_per_batch=8, samples_per_class=4,
                  learning_rate=1e-2)  # the final ReLU dies: every embedding 0  # fmt: skip
  data = synthetic_mnist(n_train=600, n_test=100)
  train_and_evaluate(config, tmp_path / "w", data, plots=False, progress=False)
  err = capsys.readouterr().err
  assert "epoch 2: the embeddings have collapsed" in err, err
  assert "lower --learning-rate (now 0.01)" in err
  assert all(
    "_radius" not in line for line in (tmp_path / "w/metrics.jsonl").read_text().splitlines()
  )
  # A run that learns says nothing.
  train_and_evaluate(Config(loss="supcon", epochs=1, classes_per_batch=8, samples_per_class=4),
                     tmp_path / "ok", data, plots=False, progress=False)  # fmt: skip
  assert "collapsed" not in capsys.readouterr().err
