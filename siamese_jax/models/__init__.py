"""The encoders (`mlp.py`, `cnn.py`, `conv4.py`), `Siamese`, and the registry.

An encoder maps float[N, H, W] in [0, 1] to float[N, D] as `encoder(x,
train=...)`. A new built-in one is a file with the module and a
`from_config(config)`, one line in `ENCODERS`, and its name in
`siamese_jax.core.config.ENCODERS` (a test checks they agree).
"""

from collections.abc import Callable

import flax.linen as nn

from siamese_jax.models import cnn, conv4, mlp
from siamese_jax.models.cnn import CNN
from siamese_jax.models.conv4 import Conv4
from siamese_jax.models.mlp import MLP
from siamese_jax.models.siamese import Siamese

# `--encoder` name -> the function that builds that encoder from a Config.
ENCODERS: dict[str, Callable[..., nn.Module]] = {
  "mlp": mlp.from_config,
  "cnn": cnn.from_config,
  "conv4": conv4.from_config,
}


def builtin_encoder(config) -> nn.Module:
  """The encoder a `Config` names (`config.encoder`, a key of `ENCODERS`)."""
  if config.encoder not in ENCODERS:
    raise ValueError(f"Unknown encoder {config.encoder!r}; built in are {', '.join(ENCODERS)}.")
  return ENCODERS[config.encoder](config)
