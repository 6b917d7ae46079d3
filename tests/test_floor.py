"""The step's breakdown from its floor builds the step it claims to (tiny data, no timing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.floor import (
  DROPOUT,
  GATHER,
  STAGES,
  format_breakdown,
  stage_epoch_fn,
  step_breakdown,
)
from siamese_jax import Config
from siamese_jax.training import create_train_state, epoch_batches, train_chunk

from conftest import synthetic_mnist


def _split(batch_size, steps, seed=0):
  data = synthetic_mnist(n_train=64, n_test=8, seed=seed)
  rng = np.random.default_rng(seed)
  num_pairs = batch_size * steps + 3
  pairs = jnp.asarray(rng.integers(0, 64, (num_pairs, 2)), jnp.int32)
  y = jnp.asarray(rng.integers(0, 2, num_pairs), jnp.float32)
  batches = epoch_batches(jax.random.key(seed), num_pairs, batch_size)
  return (jnp.asarray(data.train_images), pairs, y), batches


def _leaves_close(a, b, **tol):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tol)


@pytest.mark.slow
def test_whole_step_stage_computes_the_library_step():
  # Without dropout (the one thing drawn differently), the last stage must
  # train exactly what `train_chunk` trains: same gather, loss, RMSProp.
  config = Config(batch_size=8, dropout=0.0)
  split, batches = _split(8, 4)
  state = create_train_state(jax.random.key(1), config)
  key = jax.random.key(2)
  params, opt_state, metrics = stage_epoch_fn(config, GATHER)(
    state.params, state.opt_state, *split, batches, key
  )
  lib, lib_metrics = train_chunk(
    create_train_state(jax.random.key(1), config), split[0], {"pairs": split[1], "y": split[2]},
    batches, jnp.int32(0), key,
    length=batches.shape[0],
  )  # fmt: skip
  _leaves_close(params, lib.params, rtol=2e-5, atol=1e-7)
  _leaves_close(opt_state, lib.opt_state, rtol=2e-5, atol=1e-9)
  _leaves_close(metrics, lib_metrics, rtol=1e-5)


@pytest.mark.slow
def test_each_stage_trains_every_kernel_and_stages_differ():
  config = Config(batch_size=8)
  split, batches = _split(8, 3)
  state = create_train_state(jax.random.key(1), config)
  finals = []
  for s in range(len(STAGES)):
    params, _, _ = stage_epoch_fn(config, s)(
      state.params, state.opt_state, *split, batches, jax.random.key(2)
    )
    for i in range(3):  # no kernel is left out of the step (or hoisted)
      name = f"Dense_{i}"
      old, new = state.params["encoder"][name]["kernel"], params["encoder"][name]["kernel"]
      assert not np.array_equal(np.asarray(old), np.asarray(new)), (s, name)
    finals.append(params)
  # Each stage adds something that changes what is computed.
  for a, b in zip(finals, finals[1:], strict=False):
    k0, k1 = a["encoder"]["Dense_0"]["kernel"], b["encoder"]["Dense_0"]["kernel"]
    assert not np.array_equal(np.asarray(k0), np.asarray(k1))


def test_dropout_stage_masks_only_when_the_rate_is_positive():
  # The dropout stage against the one before: the same step but with masks;
  # with rate 0.5 the kernels' updates differ, and with rate 0 they are the same.
  split, batches = _split(8, 2)
  for rate, same in ((0.0, True), (0.5, False)):
    config = Config(batch_size=8, dropout=rate)
    state = create_train_state(jax.random.key(1), config)
    out = [
      stage_epoch_fn(config, s)(state.params, state.opt_state, *split, batches, jax.random.key(3))
      for s in (DROPOUT - 1, DROPOUT)
    ]
    k1, k2 = (o[0]["encoder"]["Dense_0"]["kernel"] for o in out)
    assert np.array_equal(np.asarray(k1), np.asarray(k2)) == same, rate


def test_bad_stage_and_encoder_are_refused():
  with pytest.raises(ValueError, match="stage must be in 0..5"):
    stage_epoch_fn(Config(), len(STAGES))
  with pytest.raises(ValueError, match="MLP"):
    stage_epoch_fn(Config(encoder="cnn"), 0)


@pytest.mark.slow
def test_step_breakdown_times_every_stage_and_the_library():
  config = Config(batch_size=8)
  split, batches = _split(8, 3)
  state = create_train_state(jax.random.key(1), config)
  rows = step_breakdown(
    state, split, batches, jax.random.key(2), config, repeats=1, log=lambda s: None
  )
  assert len(rows) == len(STAGES) + 1
  assert all(r["seconds"] > 0 for r in rows)
  assert rows[0]["over_floor"] == 1.0 and rows[0]["us_per_step_over_floor"] == 0.0
  assert "(hash)" in rows[DROPOUT]["label"] and "library" in rows[-1]["label"]
  text = format_breakdown(rows)
  assert all(r["label"] in text for r in rows) and "us/step" in text
  # The state passed in is not consumed (the library's epoch trains a copy).
  assert not state.params["encoder"]["Dense_0"]["kernel"].is_deleted()
