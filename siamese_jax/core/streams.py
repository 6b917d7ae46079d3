"""The named random streams: which number is folded into which key.

The root key is split once into init, pairs, data and dropout keys; every
other choice folds a number from one enum per parent key into one of them,
so two uses never share a number (`enum.unique`). The values are the ones
runs have always used; `tests/test_layout.py` pins them.
"""

import enum


@enum.unique
class PairsKey(enum.IntEnum):
  """Folded into a model's pairs key: its splits, their fixed pairs, its episodes."""

  TRAIN_PAIRS = 0  # the original's training pairs
  TEST_PAIRS = 1  # the original's test pairs
  HOLDOUT = 2  # which training images are held out (`--holdout`)
  VAL_PAIRS = 3  # the held-out split's pairs
  SEEN_PAIRS = 4  # test pairs among the training classes (`--train-classes`)
  UNSEEN_PAIRS = 5  # test pairs among the other classes
  TEST_EPISODES = 7  # one-shot episodes of the test split
  VAL_EPISODES = 8  # one-shot episodes of the held-out groups, every epoch and at the end
  VAL_BATCHES = 9  # the P x K batches a batch loss is validated on each epoch


@enum.unique
class EpochKey(enum.IntEnum):
  """Folded into `fold_in(data_key, epoch)`: what one epoch draws."""

  BATCHES = 0  # the shuffle of the epoch's pairs into batches
  FRESH_PAIRS = 1  # `--pairs fresh`: the epoch's new pairs


@enum.unique
class FreshPairsKey(enum.IntEnum):
  """Folded into the key of one draw of fresh pairs (`sampling.pairs.sample_pairs`)."""

  # Negatives from the anchor's group. A stream of its own, so that
  # `negatives="any"` draws exactly what it drew before groups existed.
  WITHIN_GROUP = 6


@enum.unique
class PKKey(enum.IntEnum):
  """Folded into a P x K epoch's key, the epoch's BATCHES key (`sampling.pk.pk_batches`)."""

  MEMBERS = 0  # the shuffle of each class's images before they are cut into K-chunks
  ROUNDS = 1  # the order of the classes in each round (folded again with the round)
  GROUPS = 2  # the order of the groups in each round, with `group_batches`


@enum.unique
class StepKey(enum.IntEnum):
  """Folded into a step's key, `fold_in(dropout_key, step)`; dropout uses that key itself."""

  AUGMENT = 0x61666631  # the random affine distortion of the step's images ("aff1")


# Not a stream: the fixed key that picks the held-out groups (alphabets), the
# same for every seed so that seeds validate on the same classes.
HELDOUT_GROUPS_SEED = 0
