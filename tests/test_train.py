"""The jitted step and the scanned epoch: tracing, learning, reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import (
  Config,
  create_train_state,
  eval_step,
  evaluate,
  gather_batch,
  make_pairs,
  train_epoch,
  train_step,
)
from siamese_jax.evaluation.embed import eval_params
from siamese_jax.training import epoch_batches, make_optimizer

from conftest import synthetic_mnist


def setup(seed=0, batch_size=32):
  data = synthetic_mnist()
  pairs, y = make_pairs(jax.random.key(seed), data.train_labels)
  images, pairs, y = jnp.asarray(data.train_images), jnp.asarray(pairs), jnp.asarray(y)
  batches = epoch_batches(jax.random.key(seed + 1), len(pairs), batch_size)
  return images, pairs, y, batches


def loop(state, images, pairs, y, batches, key):
  metrics = []
  for idx in batches:
    state, m = train_step(state, gather_batch(images, pairs, y, idx), key)
    metrics.append(m)
  return state, {k: np.array([m[k] for m in metrics]) for k in metrics[0]}


def tree_equal(a, b):
  return all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.slow
def test_train_step_traces_once():
  images, pairs, y, batches = setup()
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  before = train_step._cache_size()
  state, _ = loop(state, images, pairs, y, batches[:15], jax.random.key(1))
  assert int(state.step) == 15
  assert train_step._cache_size() - before == 1


@pytest.mark.slow
def test_loss_falls_on_learnable_problem():
  images, pairs, y, batches = setup()
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  key = jax.random.key(1)
  losses = []
  for epoch in range(3):
    b = epoch_batches(jax.random.key(epoch), len(pairs), 32)
    state, m = loop(state, images, pairs, y, b, key)
    losses.extend(m["loss"])
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  assert last < 0.3 * first, (first, last)
  metrics, _ = evaluate(state, images, pairs, y)
  assert float(metrics["accuracy"]) > 0.9


@pytest.mark.slow
def test_same_keys_give_bitwise_identical_results():
  images, pairs, y, batches = setup()
  results = []
  for _ in range(2):
    state = create_train_state(jax.random.key(0), Config(batch_size=32))
    results.append(loop(state, images, pairs, y, batches[:10], jax.random.key(7)))
  (s1, m1), (s2, m2) = results
  assert tree_equal(s1.params, s2.params)
  assert tree_equal(s1.opt_state, s2.opt_state)
  assert tree_equal(m1, m2)
  # A different dropout key gives different parameters.
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  s3, _ = loop(state, images, pairs, y, batches[:10], jax.random.key(8))
  assert not tree_equal(s1.params, s3.params)


@pytest.mark.slow
def test_dropout_key_is_folded_with_the_step():
  """Two steps on the same batch with the same key must use different masks."""
  images, pairs, y, batches = setup()
  state = create_train_state(jax.random.key(0), Config(batch_size=32, learning_rate=1e-12))
  batch = gather_batch(images, pairs, y, batches[0])
  state, m1 = train_step(state, batch, jax.random.key(3))
  state, m2 = train_step(state, batch, jax.random.key(3))
  # lr ~ 0: params barely move, so a loss change comes from the dropout mask.
  assert float(m1["loss"]) != float(m2["loss"])


@pytest.mark.slow
def test_scanned_epoch_is_bitwise_equal_to_looping_train_step():
  images, pairs, y, batches = setup()
  key = jax.random.key(5)
  s_loop, m_loop = loop(
    create_train_state(jax.random.key(0), Config(batch_size=32)), images, pairs, y, batches, key
  )
  s_scan, m_scan, done = train_epoch(
    create_train_state(jax.random.key(0), Config(batch_size=32)),
    images,
    {"pairs": pairs, "y": y},
    batches,
    key,
    chunk_steps=4,
  )
  assert done == len(batches)
  assert tree_equal(s_loop.params, s_scan.params)
  assert tree_equal(s_loop.opt_state, s_scan.opt_state)
  np.testing.assert_array_equal(m_loop["loss"], m_scan["loss"])
  np.testing.assert_array_equal(m_loop["accuracy"], m_scan["accuracy"])


@pytest.mark.slow
def test_epoch_split_and_resumed_is_bitwise_equal():
  """Stopping after a chunk and continuing from `start` changes nothing."""
  images, pairs, y, batches = setup()
  key = jax.random.key(5)
  full, m_full, _ = train_epoch(
    create_train_state(jax.random.key(0), Config(batch_size=32)),
    images,
    {"pairs": pairs, "y": y},
    batches,
    key,
    chunk_steps=5,
  )
  stopped, m_a, done = train_epoch(
    create_train_state(jax.random.key(0), Config(batch_size=32)),
    images, {"pairs": pairs, "y": y}, batches, key, chunk_steps=3,
    on_chunk=lambda done, total, m: done >= 3,
  )  # fmt: skip
  assert 3 <= done < len(batches)
  resumed, m_b, done2 = train_epoch(
    stopped, images, {"pairs": pairs, "y": y}, batches, key, start=done, chunk_steps=7
  )
  assert done2 == len(batches)
  assert tree_equal(full.params, resumed.params)
  np.testing.assert_array_equal(m_full["loss"], np.concatenate([m_a["loss"], m_b["loss"]]))


@pytest.mark.slow
def test_evaluate_matches_eval_step():
  images, pairs, y, batches = setup()
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  state, _ = loop(state, images, pairs, y, batches[:5], jax.random.key(1))
  metrics, d = evaluate(state, images, pairs, y)
  assert d.shape == (len(pairs),)
  n = (len(pairs) // 10) * 10
  parts = [
    eval_step(state, gather_batch(images, pairs, y, jnp.arange(i, i + 10))) for i in range(0, n, 10)
  ]
  all_idx = jnp.arange(n)
  sub, _ = evaluate(state, images, pairs[all_idx], y[all_idx])
  np.testing.assert_allclose(
    float(sub["loss"]), np.mean([float(p["loss"]) for p in parts]), rtol=1e-5
  )
  np.testing.assert_allclose(
    float(sub["accuracy"]), np.mean([float(p["accuracy"]) for p in parts]), atol=1e-6
  )
  # Without dropout, evaluation is deterministic.
  again, _ = evaluate(state, images, pairs, y)
  assert float(again["loss"]) == float(metrics["loss"])


def test_chunk_lengths_cover_the_epoch_with_few_shapes():
  from siamese_jax.training import chunk_lengths

  assert chunk_lengths(846, 200) == [141] * 6  # one length: one compile
  for steps, target in [(846, 200), (997, 200), (5, 200), (7, 3), (1, 1), (100, 1)]:
    lengths = chunk_lengths(steps, target)
    assert sum(lengths) == steps
    assert len(set(lengths)) <= 2
    assert max(lengths) - min(lengths) <= 1
  assert chunk_lengths(0, 200) == []


@pytest.mark.slow
def test_scanned_epoch_makes_no_implicit_host_to_device_copies():
  images, pairs, y, batches = setup()
  key = jax.random.key(5)
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  state, _, _ = train_epoch(
    state, images, {"pairs": pairs, "y": y}, batches, key, chunk_steps=4
  )  # compile
  with jax.transfer_guard_host_to_device("disallow"):
    state, m, done = train_epoch(
      state, images, {"pairs": pairs, "y": y}, batches, key, chunk_steps=4
    )
  assert done == len(batches) and np.isfinite(m["loss"]).all()


def test_rmsprop_puts_eps_inside_the_square_root_as_keras_3_does():
  # Keras 3's RMSprop (what experiments.keras_reference runs):
  #   nu = rho * nu + (1 - rho) * g^2;  w -= lr * g / sqrt(nu + eps).
  # Keras 2, which the 2017 example ran on, added eps outside the root; with
  # nu ~ eps the two differ by far more than rounding, so this pins the choice.
  config = Config(rmsprop_eps=1e-7)
  tx = make_optimizer(config)
  g = jnp.array([1e-3, 1e-4, 1e-5, 0.0, -2e-4], jnp.float32)
  params = jnp.zeros_like(g)
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(g, state, params)
    params = params + updates
  nu, w = np.zeros(5), np.zeros(5)
  for _ in range(3):
    nu = 0.9 * nu + 0.1 * np.asarray(g, np.float64) ** 2
    w = w - 1e-3 * np.asarray(g, np.float64) / np.sqrt(nu + 1e-7)
  np.testing.assert_allclose(np.asarray(params), w, rtol=1e-5, atol=1e-12)


def test_warmup_then_cosine_scale_the_rate_update_by_update():
  # Adam's update of a constant gradient is -rate * g / (|g| + eps): -rate to
  # float32 rounding of its bias corrections, so each update is the factor.
  config = Config(
    epochs=4, optimizer="adam", learning_rate=1.0, lr_schedule="cosine", warmup_epochs=1
  )
  tx = make_optimizer(config, steps_per_epoch=3)
  params = jnp.zeros(())
  state, got = tx.init(params), []
  for _ in range(12):
    updates, state = tx.update(jnp.ones(()), state, params)
    got.append(-float(updates))
  warmup = [1 / 3, 2 / 3, 1.0]  # the first update already moves
  cosine = [0.5 * (1 + np.cos(np.pi * k / 9)) for k in range(9)]  # the last update moves too
  np.testing.assert_allclose(got, warmup + cosine, rtol=1e-4)
  assert got[-1] > 0
  with pytest.raises(ValueError, match="steps_per_epoch"):
    make_optimizer(config)  # a schedule is planned over the run's steps


def test_adamw_moves_each_weight_by_rate_times_decay_times_itself():
  params = jnp.array([2.0, -4.0, 0.0])
  zero = jnp.zeros(3)  # Adam's own update of a zero gradient is 0: the decay is all there is
  tx = make_optimizer(Config(optimizer="adam", learning_rate=0.1, weight_decay=0.5))
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates, -0.1 * 0.5 * params, rtol=1e-6)
  plain = make_optimizer(Config(optimizer="adam", learning_rate=0.1))
  np.testing.assert_array_equal(plain.update(zero, plain.init(params), params)[0], zero)


@pytest.mark.slow
def test_a_moving_average_of_the_weights_leaves_training_alone_and_is_what_is_evaluated():
  images, pairs, y, batches = setup()
  key = jax.random.key(1)
  plain = create_train_state(jax.random.key(0), Config(batch_size=32))
  averaged = create_train_state(jax.random.key(0), Config(batch_size=32, ema_decay=0.5))
  want = jax.tree.map(np.asarray, plain.params)  # the average starts at the initial weights
  plain, _ = loop(plain, images, pairs, y, batches[:3], key)
  averaged, _ = loop(averaged, images, pairs, y, batches[:3], key)
  assert tree_equal(averaged.params, plain.params)  # the same training, bitwise
  # Replay the average over the three steps' weights.
  state = create_train_state(jax.random.key(0), Config(batch_size=32))
  for idx in batches[:3]:
    state, _ = train_step(state, gather_batch(images, pairs, y, idx), key)
    want = jax.tree.map(lambda a, p: 0.5 * a + 0.5 * np.asarray(p), want, state.params)
  got = eval_params(averaged)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not tree_equal(got, averaged.params)
  assert eval_params(plain) is plain.params  # none kept: the weights themselves
  batch = gather_batch(images, pairs, y, batches[3])
  assert float(eval_step(averaged, batch)["loss"]) == pytest.approx(
    float(eval_step(plain.replace(params=got), batch)["loss"]), rel=1e-6
  )
