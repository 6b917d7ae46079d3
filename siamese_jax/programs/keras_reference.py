"""The reference to beat: the Keras example, ported to Keras 3 on JAX, timed.

    pip install "keras>=3"
    python -m experiments.keras_reference --data-dir DIR [--epochs 5]

A port written for this comparison (not part of the library): seed 0's
pairs (`siamese_jax.make_pairs`) as float32 arrays, as the example holds
them; the same MLP, distance, loss, RMSprop and batch; `model.fit` with the
test pairs as validation, like a run's `epoch_seconds`; Keras on the JAX
backend, on the same devices. It prints each epoch's time, the median of
epochs 2 on (the first compiles) and the test accuracy at d < 0.5. Compare
with a run's median `epoch_seconds` from the same session.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from siamese_jax import cli, load_data, make_pairs  # noqa: E402
from siamese_jax.core.errors import ConfigError  # noqa: E402
from siamese_jax.core.streams import PairsKey  # noqa: E402
from siamese_jax.sampling.splits import run_keys  # noqa: E402


def build(keras, input_dim: int):
  """The example's network: a shared MLP, the distance of two embeddings."""
  layers, ops = keras.layers, keras.ops
  base = keras.Sequential(
    [
      keras.Input((input_dim,)),
      layers.Dense(128, activation="relu"),
      layers.Dropout(0.1),
      layers.Dense(128, activation="relu"),
      layers.Dropout(0.1),
      layers.Dense(128, activation="relu"),
    ]
  )
  a, b = keras.Input((input_dim,)), keras.Input((input_dim,))
  ea, eb = base(a), base(b)
  d = layers.Lambda(
    lambda t: ops.sqrt(ops.maximum(ops.sum(ops.square(t[0] - t[1]), axis=1, keepdims=True), 1e-7))
  )([ea, eb])
  return keras.Model([a, b], d)


def contrastive_loss(y_true, d):
  import keras.ops as ops

  y = ops.cast(y_true, d.dtype)
  return ops.mean(y * ops.square(d) + (1 - y) * ops.square(ops.maximum(1.0 - d, 0.0)))


def main(argv):
  parser = argparse.ArgumentParser(
    prog=cli.prog("keras_reference"), description=__doc__.splitlines()[0]
  )
  parser.add_argument("--data-dir", default=None, help="IDX directory or .npz, as for a run")
  parser.add_argument("--epochs", type=int, default=5, help="epochs to time (default 5)")
  args = parser.parse_args(argv)
  if args.epochs < 2:
    parser.error("--epochs must be >= 2 (the first epoch compiles)")
  data = load_data(args.data_dir)  # a bad --data-dir is named before Keras is looked for
  try:
    import keras
  except ImportError:
    raise ConfigError('This comparison needs Keras 3: pip install "keras>=3".') from None
  keys = run_keys(0)
  tp, ty = make_pairs(
    jax.random.fold_in(keys.pairs, PairsKey.TRAIN_PAIRS), data.train_labels, data.num_classes
  )
  ep, ey = make_pairs(
    jax.random.fold_in(keys.pairs, PairsKey.TEST_PAIRS), data.test_labels, data.num_classes
  )
  flat_tr = data.train_images.reshape(len(data.train_images), -1).astype(np.float32) / 255
  flat_te = data.test_images.reshape(len(data.test_images), -1).astype(np.float32) / 255
  x_tr, x_te = [flat_tr[tp[:, i]] for i in (0, 1)], [flat_te[ep[:, i]] for i in (0, 1)]
  keras.utils.set_random_seed(0)
  model = build(keras, flat_tr.shape[1])
  model.compile(
    loss=contrastive_loss,
    optimizer=keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7),
  )
  times = []

  class Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      times.append(time.perf_counter() - self.t)
      print(f"keras epoch {epoch + 1}/{args.epochs}: {times[-1]:.2f} s", flush=True)

  model.fit(
    x_tr, ty, batch_size=128, epochs=args.epochs, validation_data=(x_te, ey),
    verbose=0, callbacks=[Timer()],
  )  # fmt: skip
  d = model.predict(x_te, batch_size=4096, verbose=0)[:, 0]
  print(f"keras {keras.__version__} on {keras.backend.backend()} ({jax.default_backend()})")
  print(f"median epoch (epochs 2-{args.epochs}): {statistics.median(times[1:]):.3f} s")
  print(f"test pair accuracy at 0.5 after {args.epochs} epochs: {np.mean((d < 0.5) == ey):.4f}")


# Sets no XLA flags of its own (see siamese_jax.programs.run).
PROJECT_XLA_FLAGS = False
