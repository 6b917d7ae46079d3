"""The presets: each program's default config, in one place.

* `MNIST`: the Keras original, `Config()`'s own defaults.
* `OMNIGLOT`: one-shot on Omniglot, chosen on held-out background alphabets
  alone (docs/losses.md, docs/oneshot.md): 32x32 ink-bright, `conv4` with a 32-wide first
  block, SupCon at temperature 0.05 on P x K = 64 x 4 with rotations as classes, Adam, 16
  epochs, 5 alphabets held out; embeddings averaged over 1.5-pixel test-time shifts.
* `OMNIGLOT_CONTRASTIVE`: issue 17's pair-loss default, for comparison and
  `benchmarks.omniglot_step`.
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
  epochs=16,  # chosen on validation (docs/oneshot.md)
  learning_rate=1e-3,
  optimizer="adam",
  hidden_sizes=(32, 64, 64, 64, 128),  # chosen on validation (docs/oneshot.md)
  dropout=0.0,
  final_relu=False,
  encoder="conv4",
  loss="supcon",
  temperature=0.05,  # chosen on validation (docs/oneshot.md)
  classes_per_batch=64,  # chosen on validation (docs/oneshot.md); supcon's own is 32
  samples_per_class=4,
  rotations=True,
  image_size=32,  # chosen on validation (docs/oneshot.md)
  invert=True,
  holdout_groups=5,
  tta_shift=1.5,  # chosen on validation (docs/oneshot.md)
)
