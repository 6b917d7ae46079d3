"""Datasets from files (`Dataset`, `load_data`): MNIST's IDX files, Keras .npz, tfds,
Omniglot; the one image decoder and archive reader; a run's preprocessing; affine
warps on the device.
"""

from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset
from siamese_jax.data.load import TFDS_NAMES, data_source, load_data, load_recorded
from siamese_jax.data.omniglot import OMNIGLOT_IMAGE_SIZE, load_omniglot
