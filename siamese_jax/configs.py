"""The presets: each program's default config, in one place experiments and benchmarks import.

* `MNIST`: the Keras original's mnist_siamese, `Config()`'s own defaults
  (`python -m experiments.mnist_siamese`).
* `OMNIGLOT`: this project's choice for one-shot learning on Omniglot
  (`python -m experiments.omniglot`), made on the held-out background
  alphabets alone (docs/losses.md): 28x28 ink-bright images, the `conv4`
  encoder, the supervised contrastive loss on P x K = 32 x 4 batches with
  every character's rotations as classes, Adam, 8 epochs, and 5
  background alphabets held out to validate on.
* `OMNIGLOT_CONTRASTIVE`: issue 17's pair-loss default, kept to compare
  with and for `benchmarks.omniglot_step`: fresh pairs with half the
  negatives from the anchor's alphabet, Koch et al.'s affine distortions,
  RMSProp, 20 epochs.
"""

from siamese_jax.core.config import Config

MNIST = Config()

OMNIGLOT_CONTRASTIVE = Config(
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

OMNIGLOT = Config(
  epochs=8,
  learning_rate=1e-3,
  optimizer="adam",
  hidden_sizes=(128,),
  dropout=0.0,
  final_relu=False,
  encoder="conv4",
  loss="supcon",
  temperature=0.1,
  classes_per_batch=32,
  samples_per_class=4,
  rotations=True,
  image_size=28,
  invert=True,
  holdout_groups=5,
)
