"""A finished run put to use: `load_trained`, gallery indexes with "unknown" as an
answer, and calibration of its threshold.
"""

from siamese_jax.recognition.calibrate import Calibration, calibrate
from siamese_jax.recognition.index import UNKNOWN, Index, load_index
from siamese_jax.recognition.trained import TrainedModel, load_trained
