"""The presets: each program's default config, in one place experiments and benchmarks import.

* `MNIST`: the Keras original's mnist_siamese, `Config()`'s own defaults
  (`python -m experiments.mnist_siamese`).
* `OMNIGLOT`: this project's measured choice for one-shot learning on
  Omniglot (`python -m experiments.omniglot`, docs/oneshot.md): 28x28
  ink-bright images, the `conv4` encoder, fresh pairs with half the
  negatives from the anchor's alphabet, Koch et al.'s affine distortions,
  and 5 background alphabets held out to validate on.
"""

from siamese_jax.core.config import Config

MNIST = Config()

OMNIGLOT = Config(
  epochs=20,
  batch_size=128,
  learning_rate=1e-3,
  hidden_sizes=(128,),
  dropout=0.0,
  final_relu=False,
  encoder="conv4",
  pairs="fresh",
  negatives="mixed",
  augment="affine",
  image_size=28,
  invert=True,
  holdout_groups=5,
)
