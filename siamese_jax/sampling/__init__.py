"""What a step learns from: pairs of images as indices (`pairs.py`) or P x K
batches of images (`pk.py`), the epoch's shuffle, and a model's keys and
splits (`check_data`). `SAMPLERS` maps `Config.sampler` to its module.
"""

from siamese_jax.sampling import pairs, pk

# `--sampler` -> the module that draws its batches.
SAMPLERS = {"pairs": pairs, "pk": pk}
