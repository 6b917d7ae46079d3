"""siamese_jax: a Siamese network with a contrastive loss, in JAX.

A JAX/Flax reimplementation of the Keras example "mnist_siamese" (after
Hadsell, Chopra & LeCun 2006, DrLIM). Label convention throughout: y = 1.0
means "same digit" (the Keras example's), the reverse of the paper's.
"""

from siamese_jax import checkpoint, evaluation, parallel, plots
from siamese_jax.config import Config
from siamese_jax.data import load_data
from siamese_jax.dataset import Dataset
from siamese_jax.errors import (
  ConfigError,
  DataError,
  NonFiniteLossError,
  SiameseJaxError,
  WorkdirError,
)
from siamese_jax.evaluation import embed_images, evaluate
from siamese_jax.index import Index, calibrate, load_index
from siamese_jax.losses import contrastive_loss, euclidean_distance, pair_accuracy
from siamese_jax.models import CNN, MLP, Conv4, Siamese
from siamese_jax.omniglot import load_omniglot
from siamese_jax.pairs import make_pairs, sample_pairs
from siamese_jax.retrieval import retrieval_metrics
from siamese_jax.run import train_and_evaluate
from siamese_jax.train import (
  TrainState,
  create_train_state,
  eval_step,
  gather_batch,
  train_chunk,
  train_epoch,
  train_step,
)
from siamese_jax.trained import TrainedModel, load_trained

__all__ = [
  "checkpoint",
  "evaluation",
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
