"""`MLP`: the Keras original's base network (`--encoder mlp`, the default).

flatten -> Dense 128 ReLU -> Dropout 0.1 -> Dense 128 ReLU -> Dropout 0.1 ->
Dense 128 ReLU: 133,504 parameters on 28x28 images. Kernels start
Glorot-uniform and biases at zero, as Keras' Dense does.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from siamese_jax.models.dropout import dropout_layer


class MLP(nn.Module):
  """Dense+ReLU layers with dropout between them.

  Attributes:
    hidden_sizes: width of each Dense layer.
    dropout: rate of the dropout after every layer but the last.
    final_relu: whether the last layer has a ReLU (the original's does; a
      2-D embedding for plotting is better without one).
    dropout_rng: where the dropout masks come from: "hash" (the fast
      counter-based hash of `siamese_jax.models.dropout`) or "threefry" (flax's
      `nn.Dropout`, JAX's standard PRNG).
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  dropout: float = 0.1
  final_relu: bool = True
  dropout_rng: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Embeds a batch of images.

    Args:
      x: float[B, H, W] or float[B, H * W], values in [0, 1].
      train: enables dropout (needs a "dropout" rng).

    Returns:
      float[B, hidden_sizes[-1]] embeddings.
    """
    x = x.reshape(x.shape[0], -1)
    last = len(self.hidden_sizes) - 1
    for i, width in enumerate(self.hidden_sizes):
      x = nn.Dense(width, kernel_init=nn.initializers.glorot_uniform())(x)
      if i < last or self.final_relu:
        x = nn.relu(x)
      if i < last:
        x = dropout_layer(self.dropout, self.dropout_rng)(x, deterministic=not train)
    return x


def from_config(config) -> MLP:
  """`--encoder mlp`: the widths of `hidden_sizes`, the config's dropout and final ReLU."""
  return MLP(tuple(config.hidden_sizes), config.dropout, config.final_relu, config.dropout_rng)
