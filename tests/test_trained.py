"""Using a trained model: load_trained, experiments.compare and embed, custom encoders."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import siamese_jax as sj
from siamese_jax.evaluation.embed import embed, eval_params

from conftest import run_module, write_mnist_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  from conftest import synthetic_mnist

  data = synthetic_mnist()
  workdir = tmp_path_factory.mktemp("run")
  results = sj.train_and_evaluate(sj.Config(epochs=2, batch_size=32), workdir, data, plots=False)
  return workdir, data, results


def test_load_trained_reproduces_the_runs_embeddings_and_threshold(finished):
  workdir, data, results = finished
  model = sj.load_trained(workdir)
  assert model.threshold == results["threshold"] and model.image_shape == (28, 28)
  state = sj.checkpoint.load(
    str(workdir), sj.create_train_state(jax.random.key(0), model.config)
  ).state
  want = np.asarray(sj.embed_images(state, jnp.asarray(data.test_images)))
  got = model.embed(data.test_images)
  assert got.dtype == np.float32 and got.shape == (200, 128)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # floats in [0, 1] and flat images give the same; uint8 is divided by 255.
  np.testing.assert_allclose(model.embed(data.test_images / 255.0), got, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.embed(data.test_images.reshape(200, -1)), got, atol=1e-6)


def test_distance_and_same_follow_the_threshold(finished):
  workdir, data, _ = finished
  model = sj.load_trained(workdir)
  x1, x2 = data.test_images[:50], data.test_images[50:100]
  d = model.distance(x1, x2)
  e1, e2 = model.embed(x1), model.embed(x2)
  # The loss's distance: sqrt of the squared distance clamped at 1e-7, as Keras does.
  want = np.sqrt(np.maximum(np.sum((e1 - e2) ** 2, axis=1), 1e-7))
  np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(model.same(x1, x2), d < model.threshold)
  assert model.distance(x1, x1).max() < 1e-3
  y = data.test_labels[:50] == data.test_labels[50:100]
  assert np.mean(model.same(x1, x2) == y) > 0.8  # it learned something


@pytest.mark.parametrize(
  "images, message",
  [
    (np.zeros((2, 27, 28), np.uint8), r"shape \(N, 28, 28\)"),
    (np.full((2, 28, 28), 255.0), r"must lie in \[0, 1\]"),
    (np.full((2, 28, 28), 300, np.int64), "int64 pixels 300..300 are not 8-bit"),
  ],
)
def test_bad_images_are_refused(finished, images, message):
  with pytest.raises(ValueError, match=message):
    sj.load_trained(finished[0]).embed(images)


def test_an_unfinished_run_names_what_is_missing(tmp_path, finished):
  with pytest.raises(sj.WorkdirError, match="results.json missing.*--resume"):
    (tmp_path / "config.json").write_text((finished[0] / "config.json").read_text())
    sj.load_trained(tmp_path)
  with pytest.raises(sj.WorkdirError, match="config.json, checkpoint.msgpack, results.json"):
    sj.load_trained(tmp_path / "nothing")


def save_png(path, pixels, mode="L"):
  Image.fromarray(pixels).convert(mode).save(path)
  return str(path)


@pytest.mark.slow
def test_compare_prints_distance_threshold_and_verdict(tmp_path, finished):
  workdir, data, _ = finished
  model = sj.load_trained(workdir)
  a = save_png(tmp_path / "a.png", data.test_images[0])
  b = save_png(tmp_path / "b.png", data.test_images[1])
  r = run_module("experiments.compare", "--workdir", str(workdir), a, b)
  assert r.returncode == 0, r.stderr
  d = float(model.distance(data.test_images[:1], data.test_images[1:2])[0])
  lines = r.stdout.split("\n")
  assert float(lines[0].split()[1]) == pytest.approx(d, abs=1e-4)
  assert float(lines[1].split()[1]) == pytest.approx(model.threshold, abs=1e-4)
  assert lines[2] == ("same" if d < model.threshold else "different")


@pytest.mark.slow
def test_compare_refuses_a_file_that_is_not_an_image(tmp_path, finished):
  # Any image PIL reads is taken (tests/test_programs.py); anything else is one paragraph.
  ok = save_png(tmp_path / "ok.png", finished[1].test_images[0])
  bad = tmp_path / "notes.png"
  bad.write_text("not an image at all")
  r = run_module("experiments.compare", "--workdir", str(finished[0]), ok, str(bad))
  assert r.returncode == 1 and "notes.png: not a readable image" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_embed_writes_embeddings_and_projector_labels(tmp_path, finished):
  workdir, data, _ = finished
  d = write_mnist_dir(tmp_path / "data", data)
  out = tmp_path / "out"
  r = run_module(
    "experiments.embed", "--workdir", str(workdir), "--split", "test", "--out", str(out),
    "--data-dir", d,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  emb = np.load(out / "embeddings.npy")
  np.testing.assert_allclose(emb, sj.load_trained(workdir).embed(data.test_images), atol=1e-6)
  labels = (out / "labels.tsv").read_text().splitlines()
  assert labels == [str(y) for y in data.test_labels]


class TinyConvEncoder(nn.Module):
  """A custom encoder defined here, used through the public API alone."""

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Conv(4, (5, 5), strides=(4, 4))(x[..., None])
    x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
    return nn.Dense(16)(x.reshape(x.shape[0], -1))


@pytest.mark.slow
def test_a_custom_encoder_trains_evaluates_checkpoints_and_loads(tmp_path, small_mnist):
  encoder = TinyConvEncoder()
  config = sj.Config(epochs=2, batch_size=32)
  state = sj.create_train_state(jax.random.key(0), config, encoder=encoder)
  assert "Conv_0" in state.params["encoder"]
  batch = {
    "x1": jnp.asarray(small_mnist.train_images[:32] / 255.0, jnp.float32),
    "x2": jnp.asarray(small_mnist.train_images[32:64] / 255.0, jnp.float32),
    "y": jnp.asarray(small_mnist.train_labels[:32] == small_mnist.train_labels[32:64], jnp.float32),
  }
  state, metrics = sj.train_step(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert set(sj.eval_step(state, batch)) == {"loss", "accuracy"}
  results = sj.train_and_evaluate(config, tmp_path / "run", small_mnist, encoder=encoder)
  assert results["encoder"] == "custom (TinyConvEncoder)"
  assert results["test_accuracy"] > 0.7 and results["test_precision_at_1"] > 0.7
  with pytest.raises(sj.WorkdirError, match="custom .*TinyConvEncoder.*encoder="):
    sj.load_trained(tmp_path / "run")
  model = sj.load_trained(tmp_path / "run", encoder=encoder)
  assert model.embed(small_mnist.test_images[:5]).shape == (5, 16)
  # Resuming a finished run with the same encoder reads its checkpoint back.
  again = sj.train_and_evaluate(
    config, tmp_path / "run", small_mnist, encoder=encoder, resume=True, plots=False
  )
  assert again["test_accuracy"] == results["test_accuracy"]


@pytest.mark.slow
def test_the_cnn_is_a_config_choice_that_load_trained_rebuilds(tmp_path, small_mnist):
  config = sj.Config(epochs=2, batch_size=32, encoder="cnn")
  results = sj.train_and_evaluate(config, tmp_path / "cnn", small_mnist, plots=False)
  saved = json.loads((tmp_path / "cnn/config.json").read_text())
  assert saved["encoder"] == "cnn" and results["encoder"] == "cnn"
  model = sj.load_trained(tmp_path / "cnn")
  assert "conv_16" in model.params["encoder"]
  assert results["test_accuracy"] > 0.8


def test_test_time_shifts_average_the_image_and_its_four_moves(finished):
  workdir, data, _ = finished
  model = sj.load_trained(workdir)
  apply, params = model.model.apply, model.params
  x = data.test_images[:6].astype(np.float32) / 255.0
  plain = embed(apply, params, x)
  np.testing.assert_array_equal(embed(apply, params, x, shift=0.0), plain)

  def moved(dr, dc):  # out[r, c] = x[r + dr, c + dc], zero outside
    out = np.zeros_like(x)
    h, w = x.shape[1:]
    out[:, max(-dr, 0) : h - max(dr, 0), max(-dc, 0) : w - max(dc, 0)] = x[
      :, max(dr, 0) : h + min(dr, 0), max(dc, 0) : w + min(dc, 0)
    ]
    return np.asarray(embed(apply, params, out))

  views = [moved(0, 0), moved(-1, 0), moved(1, 0), moved(0, -1), moved(0, 1)]
  got = np.asarray(embed(apply, params, x, shift=1.0))
  np.testing.assert_allclose(got, np.mean(views, 0), rtol=1e-4, atol=1e-5)
  unit = np.asarray(embed(apply, params, x, shift=1.0, normalize=True))
  np.testing.assert_allclose(unit, got / np.linalg.norm(got, axis=1, keepdims=True), atol=1e-6)
  # load_trained applies a shift it is given, and the fingerprint tells the two apart.
  shifted = sj.load_trained(workdir, tta_shift=1.0)
  np.testing.assert_allclose(shifted.embed(data.test_images[:6]), got, atol=1e-6)
  assert shifted.fingerprint != model.fingerprint
  with pytest.raises(sj.ConfigError, match="tta_shift"):
    sj.load_trained(workdir, tta_shift=-1.0)


def test_test_time_turns_add_the_image_turned_each_way(finished):
  workdir, data, _ = finished
  model = sj.load_trained(workdir)
  apply, params = model.model.apply, model.params
  x = data.test_images[:6].astype(np.float32) / 255.0
  # A quarter turn maps the square grid onto itself, so it is exact: the
  # views are the image and np.rot90 of it each way, whichever sign is which.
  turned = [embed(apply, params, np.rot90(x, k, axes=(1, 2)).copy()) for k in (0, 1, -1)]
  got = np.asarray(embed(apply, params, x, turn=90.0))
  np.testing.assert_allclose(got, np.mean(turned, 0), rtol=1e-4, atol=1e-5)
  # With shifts, the turns join the image and its 4 moves: 7 views.
  moves = np.asarray(embed(apply, params, x, shift=1.0))
  both = np.asarray(embed(apply, params, x, shift=1.0, turn=90.0))
  np.testing.assert_allclose(both, (5 * moves + np.sum(turned[1:], 0)) / 7, rtol=1e-4, atol=1e-5)
  # load_trained applies a turn it is given, alone or with a shift; the
  # fingerprint tells them apart, and a turn past 45 degrees is refused.
  small = sj.load_trained(workdir, tta_turn=10.0)
  np.testing.assert_allclose(
    small.embed(data.test_images[:6]), embed(apply, params, x, turn=10.0), atol=1e-6
  )
  assert not np.allclose(small.embed(data.test_images[:6]), model.embed(data.test_images[:6]))
  with_shift = sj.load_trained(workdir, tta_shift=1.0, tta_turn=10.0)
  prints = {small.fingerprint, with_shift.fingerprint, model.fingerprint}
  assert len(prints) == 3 and sj.load_trained(workdir, tta_shift=1.0).fingerprint not in prints
  with pytest.raises(sj.ConfigError, match="tta_turn"):
    sj.load_trained(workdir, tta_turn=90.0)


@pytest.mark.slow
def test_a_run_with_test_time_shifts_reports_what_load_trained_embeds(tmp_path, small_mnist):
  config = sj.Config(epochs=1, batch_size=32, tta_shift=1.0)
  results = sj.train_and_evaluate(config, tmp_path / "w", small_mnist, plots=False)
  model = sj.load_trained(tmp_path / "w")
  assert model.config.tta_shift == 1.0
  r = sj.retrieval_metrics(model.embed(small_mnist.test_images), small_mnist.test_labels)
  assert r["precision_at_1"] == results["test_precision_at_1"]
  assert r["map_at_r"] == pytest.approx(results["test_map_at_r"], abs=1e-7)
  plain = sj.load_trained(tmp_path / "w", tta_shift=0.0)
  r0 = sj.retrieval_metrics(plain.embed(small_mnist.test_images), small_mnist.test_labels)
  assert r0["map_at_r"] != r["map_at_r"]  # the shifts changed what the run reported


@pytest.mark.slow
def test_a_run_with_a_moving_average_is_evaluated_and_loaded_with_it(tmp_path, small_mnist):
  config = sj.Config(epochs=1, batch_size=32, ema_decay=0.9)
  results = sj.train_and_evaluate(config, tmp_path / "w", small_mnist, plots=False)
  model = sj.load_trained(tmp_path / "w")
  state = sj.checkpoint.load(str(tmp_path / "w"), sj.create_train_state(jax.random.key(0), config))
  state = state.state
  averaged = embed(state.apply_fn, eval_params(state), small_mnist.test_images)
  np.testing.assert_allclose(model.embed(small_mnist.test_images), averaged, atol=1e-6)
  weights = embed(state.apply_fn, state.params, small_mnist.test_images)
  assert np.abs(np.asarray(weights) - np.asarray(averaged)).max() > 1e-3
  r = sj.retrieval_metrics(np.asarray(averaged), small_mnist.test_labels)
  assert r["map_at_r"] == pytest.approx(results["test_map_at_r"], abs=1e-7)
