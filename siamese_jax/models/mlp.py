"""`MLP`: the Keras original's base network (`--encoder mlp`, the default).

flatten -> Dense 128 ReLU -> Dropout 0.1 -> Dense 128 ReLU -> Dropout 0.1 ->
Dense 128 ReLU: 133,504 parameters on 28x28 images, Glorot-uniform kernels
and zero biases as Keras' Dense.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from siamese_jax.models.dropout import dropout_layer


class MLP(nn.Module):
  """Dense+ReLU layers with dropout between them.

  `final_relu`: the original's last layer has one (a 2-D map is better
  without). `dropout_rng`: "hash" (`siamese_jax.models.dropout`) or
  "threefry" (flax's `nn.Dropout`).
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  dropout: float = 0.1
  final_relu: bool = True
  dropout_rng: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[B, H, W] or [B, H * W] in [0, 1] -> float[B, D]; `train` enables dropout."""
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
