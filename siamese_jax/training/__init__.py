"""Training: the state, the jitted `train_step`, the placements, `build_run`, and the
one loop (`train_and_evaluate`) for one model or many.
"""

from siamese_jax.sampling.shuffle import epoch_batches
from siamese_jax.training.loop import RunInterrupted, train_and_evaluate
from siamese_jax.training.setup import RunSetup, build_run
from siamese_jax.training.state import TrainState, create_train_state, make_model, make_optimizer
from siamese_jax.training.step import (
  chunk_lengths,
  eval_step,
  train_chunk,
  train_epoch,
  train_step,
  train_step_body,
)
