"""siamese_jax: a Siamese network with a contrastive loss, in JAX.

A JAX/Flax reimplementation of the Keras example "mnist_siamese" (after
Hadsell, Chopra & LeCun 2006, DrLIM), and a research tool around it. y = 1.0
means "same" (the Keras example's convention, the reverse of the paper's).
Subpackages are layers, ground first: core, rundir, data, sampling, losses,
models, evaluation, training, recognition; a module imports only from its
own layer or those before it (tests/test_layout.py).
"""

from siamese_jax import evaluation, losses  # noqa: E402  (the subpackages themselves)
from siamese_jax.core import parallel
from siamese_jax.core.config import Config
from siamese_jax.core.errors import (
  ConfigError,
  DataError,
  NonFiniteLossError,
  SiameseJaxError,
  WorkdirError,
)
from siamese_jax.data import Dataset, load_data, load_omniglot
from siamese_jax.evaluation import plots
from siamese_jax.evaluation.embed import embed_images
from siamese_jax.evaluation.pairs import evaluate
from siamese_jax.evaluation.retrieval import retrieval_metrics
from siamese_jax.losses import contrastive_loss, euclidean_distance, pair_accuracy
from siamese_jax.models import CNN, MLP, Conv4, Siamese
from siamese_jax.recognition import Index, TrainedModel, calibrate, load_index, load_trained
from siamese_jax.rundir import checkpoint
from siamese_jax.sampling.pairs import gather_batch, make_pairs, sample_pairs
from siamese_jax.sampling.pk import gather_images
from siamese_jax.training import (
  TrainState,
  create_train_state,
  eval_step,
  train_and_evaluate,
  train_chunk,
  train_epoch,
  train_step,
)

__all__ = [
  "checkpoint",
  "evaluation",
  "losses",
  "parallel",
  "plots",
  "Config",
  "ConfigError",
  "DataError",
  "Dataset",
  "Index",
  "CNN",
  "Conv4",
  "MLP",
  "NonFiniteLossError",
  "SiameseJaxError",
  "Siamese",
  "TrainState",
  "TrainedModel",
  "WorkdirError",
  "calibrate",
  "contrastive_loss",
  "create_train_state",
  "embed_images",
  "euclidean_distance",
  "eval_step",
  "evaluate",
  "gather_batch",
  "gather_images",
  "load_data",
  "load_omniglot",
  "load_index",
  "load_trained",
  "make_pairs",
  "pair_accuracy",
  "retrieval_metrics",
  "sample_pairs",
  "train_and_evaluate",
  "train_chunk",
  "train_epoch",
  "train_step",
]
