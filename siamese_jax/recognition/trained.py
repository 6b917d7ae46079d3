"""Use a finished run: `load_trained(workdir)` -> embed, compare, decide.

    model = sj.load_trained("runs/mnist_siamese/20261130-041500-seed0")
    model.embed(images)          # float32[N, D]
    model.distance(x1, x2)       # float32[N]
    model.same(x1, x2)           # bool[N]: distance < model.threshold

A `--seeds` run's folder is one model: its members' embeddings joined, so
a squared distance is the mean of theirs (`siamese_jax.evaluation.embed`);
each member's folder is still a single model. A run's test-time views
(`Config.tta_shift`, `Config.tta_turn`) apply to every embedding.

`threshold` is the run's own (`siamese_jax.evaluation.final`). Images are
uint8 [N, H, W] or floats in [0, 1] ([N, H * W] too); a run that resizes or
inverts (Omniglot's) takes them as the dataset ships them and preprocesses
them as in training. The network runs jitted, without dropout, a chunk at
a time (`siamese_jax.evaluation.embed`).
"""

import dataclasses
import functools
import json
import os
import sys
from typing import Any

import jax
import numpy as np

from siamese_jax.core.config import Config
from siamese_jax.core.errors import DataError, InputError, WorkdirError
from siamese_jax.data.dataset import Dataset
from siamese_jax.data.images import read_image, to_uint8
from siamese_jax.data.load import load_data, load_recorded
from siamese_jax.data.preprocess import needs_preprocessing, preprocess_images, resize
from siamese_jax.evaluation.embed import embedder, eval_params
from siamese_jax.losses import LEARNED
from siamese_jax.losses.distances import euclidean_distance
from siamese_jax.recognition.index import Index, fingerprint
from siamese_jax.rundir import checkpoint
from siamese_jax.rundir.results import SUMMARY_NAME
from siamese_jax.rundir.workdir import CONFIG_NAME, RESULTS_NAME, read_config, read_results
from siamese_jax.training.ensemble import seed_dir
from siamese_jax.training.state import create_train_state, make_model


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained network and its threshold; `num_classes` is None for runs that did not record it.

  An ensemble of `members` > 1 networks holds a tuple of their parameters.
  """

  config: Config
  params: Any
  threshold: float
  image_shape: tuple[int, int]
  model: Any
  num_classes: int | None = None
  members: int = 1

  def embed(self, images) -> np.ndarray:
    """Images as `load_trained` says -> float32[N, D], a memory budget's worth at a time."""
    return self._embed(self._images(images, "images"))

  def _embed(self, x) -> np.ndarray:
    members = self.params if self.members > 1 else (self.params,)
    return np.asarray(embedder(self.model.apply, members, self.config)(x), np.float32)

  def embed_files(self, paths) -> np.ndarray:
    """float32[N, D]: image files embedded through the run's own input.

    Files are read as 8-bit grayscale and preprocessed as in training (a run
    without preprocessing resizes with its `resize_filter`); files of the
    opposite polarity get one warning. Raises DataError naming a bad file.
    """
    pixels = [read_image(p) for p in paths]
    self._warn_polarity(paths, pixels)
    if needs_preprocessing(self.config):
      x = [preprocess_images(p, self.config)[0] for p in pixels]
    else:
      x = [resize(p[None], self.image_shape, self.config.resize_filter)[0] for p in pixels]
    if not x:
      return self.embed(np.zeros((0, *self.image_shape), np.uint8))
    return self._embed(np.stack(x))

  def _warn_polarity(self, paths, pixels) -> None:
    """One warning for files whose background is the opposite of the run's input's."""
    light_paper = self.config.invert  # a run that inverts takes dark ink on light paper
    wrong = [p for p, x in zip(paths, pixels, strict=True) if (x.mean() > 127) != light_paper]
    if wrong:
      want = "dark ink on a light background" if light_paper else "light ink on a dark background"
      shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
      print(
        f"warning: {shown}: drawn the other way round from this run's images ({want}); "
        "invert them, or the distances mean little.",
        file=sys.stderr,
      )

  def distance(self, x1, x2) -> np.ndarray:
    """float32[N]: Euclidean distance of each pair's embeddings."""
    e1, e2 = self.embed(x1), self.embed(x2)
    if len(e1) != len(e2):
      raise InputError(f"x1 and x2 must hold as many images, got {len(e1)} and {len(e2)}.")
    return np.asarray(euclidean_distance(e1, e2), np.float32)

  def same(self, x1, x2) -> np.ndarray:
    """bool[N]: whether each pair is closer than the run's threshold."""
    return self.distance(x1, x2) < self.threshold

  @functools.cached_property
  def fingerprint(self) -> str:
    """Which model this is, for the indexes built with it (`siamese_jax.recognition.index`)."""
    if self.members == 1 and not self.config.tta_shift and not self.config.tta_turn:
      return fingerprint(self.params)
    if not self.config.tta_turn:  # the fingerprints of indexes built before turns existed
      return fingerprint((self.params, self.config.tta_shift))
    return fingerprint((self.params, self.config.tta_shift, self.config.tta_turn))

  def index(self, images, labels, **kwargs):
    """An `Index` of gallery images and int or str [N] labels (`backend`, `threshold`)."""
    return Index(self.embed(images), labels, model=self, fingerprint=self.fingerprint, **kwargs)

  def load_data(self, data_dir=None, *, tfds_name: str | None = None) -> Dataset:
    """The run's own data, or `data_dir`'s; DataError if none, unreadable, or unlike the run's."""
    if data_dir is not None or tfds_name is not None:
      data = load_data(data_dir, tfds_name=tfds_name or "mnist")
    elif self.config.data is not None:
      data = load_recorded(self.config.data)
    else:
      raise DataError(
        "This run did not record its data (it was trained from arrays in code, or before runs "
        "recorded their data); name it with --data-dir (or --tfds-name)."
      )
    self.check_data(data)
    return data

  def check_data(self, data: Dataset) -> None:
    """DataError naming both when the image shape or class count differs from the run's."""
    shape = data.image_shape
    if self.config.image_size is not None:  # the run resizes whatever it is given
      shape = (self.config.image_size,) * 2
    if shape != self.image_shape:
      h, w = self.image_shape
      raise DataError(
        f"{data.source}: {data.image_shape[0]}x{data.image_shape[1]} images, but the run was "
        f"trained on {h}x{w} images; use the run's own dataset ({self.config.data})."
      )
    if self.num_classes is not None and data.num_classes != self.num_classes:
      raise DataError(
        f"{data.source}: {data.num_classes} classes, but the run was trained on data of "
        f"{self.num_classes}; use the run's own dataset ({self.config.data})."
      )

  def _images(self, images, name: str) -> np.ndarray:
    x = np.asarray(images)
    if needs_preprocessing(self.config):
      # The run's own input pipeline: images come as the dataset ships them.
      x = preprocess_images(x, self.config)
    h, w = self.image_shape
    if x.ndim == 2 and x.shape[1] == h * w:
      x = x.reshape(len(x), h, w)
    if x.ndim != 3 or x.shape[1:] != (h, w):
      raise InputError(
        f"{name}: expected images of shape (N, {h}, {w}) (or (N, {h * w})), got {x.shape}."
      )
    if np.issubdtype(x.dtype, np.floating) and x.size and x.min() >= 0 and x.max() <= 1:
      return x.astype(np.float32)  # floats in [0, 1] are the model's own input, unrounded
    try:  # every other depth as the same picture in 8 bits (`data.images.to_uint8`)
      return to_uint8(x, name)
    except DataError as e:
      raise InputError(str(e)) from None


def load_trained(
  workdir: str | os.PathLike, *, encoder=None, tta_shift: float | None = None,
  tta_turn: float | None = None,
) -> TrainedModel:  # fmt: skip
  """Loads the network and threshold of a finished run in `workdir`, or a --seeds run's ensemble.

  `encoder`: the custom Flax encoder it was trained with, if any (built-in
  ones are rebuilt from config.json). `tta_shift`, `tta_turn`: test-time
  views other than the run's own (0: none). Raises WorkdirError for missing files, a
  sweep's folder, or a run of another encoder.
  """
  workdir = os.fspath(workdir)
  if not os.path.isfile(os.path.join(workdir, CONFIG_NAME)) and os.path.isfile(
    os.path.join(workdir, SUMMARY_NAME)
  ):
    return _load_ensemble(workdir, encoder, tta_shift, tta_turn)
  need = (CONFIG_NAME, checkpoint.CHECKPOINT_NAME, RESULTS_NAME)
  missing = [f for f in need if not os.path.isfile(os.path.join(workdir, f))]
  if missing:
    hint = (
      "The run has not finished: continue it with --resume."
      if os.path.isfile(os.path.join(workdir, CONFIG_NAME))
      else "Is this a run's workdir?"
    )
    raise WorkdirError(f"{workdir!r} holds no finished run: {', '.join(missing)} missing. {hint}")
  config = read_config(os.path.join(workdir, CONFIG_NAME))
  views = {k: v for k, v in (("tta_shift", tta_shift), ("tta_turn", tta_turn)) if v is not None}
  config = dataclasses.replace(config, **views)  # checked by Config
  results = read_results(workdir)
  used = results.get("encoder", config.encoder)
  if used.startswith("custom") and encoder is None:
    raise WorkdirError(
      f"The run in {workdir!r} was trained with a {used} encoder; pass the same module: "
      "load_trained(workdir, encoder=...)."
    )
  image_shape = tuple(results.get("image_shape", (28, 28)))  # older runs: MNIST
  # A loss's own parameters (the proxies) restore in whatever shape they were
  # stored, and are left out: they are not part of the model one embeds with.
  # A schedule's steps only shape its factor, not the state restored into.
  target = create_train_state(
    jax.random.key(0), config, encoder=encoder, image_shape=image_shape, classes=1,
    steps_per_epoch=1,
  )  # fmt: skip
  params = eval_params(checkpoint.load(workdir, target).state)
  params = {k: v for k, v in params.items() if k != LEARNED}
  return TrainedModel(
    config, params, float(results["threshold"]), image_shape,
    make_model(config, encoder=encoder), results.get("num_classes"),
  )  # fmt: skip


def _load_ensemble(workdir: str, encoder, tta_shift, tta_turn) -> TrainedModel:
  """A finished --seeds run's models as one (module doc)."""
  path = os.path.join(workdir, SUMMARY_NAME)
  try:
    with open(path) as f:
      summary = json.load(f)
    seeds = [int(s) for s in summary["seeds"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise WorkdirError(
      f"{path} cannot be read ({e!r}): it was cut short or damaged. Run the run's own command "
      "with --resume: its training is finished, so it evaluates again and writes it whole."
    ) from None
  if "sweep" in summary:
    sweep = summary["sweep"]
    raise WorkdirError(
      f"{workdir!r} holds a sweep of {sweep['field']}: its models differ in more than the "
      f"seed. Load one of them, e.g. {os.path.join(workdir, '<value folder>', 'seed_<S>')}."
    )
  members = [
    load_trained(seed_dir(workdir, s), encoder=encoder, tta_shift=tta_shift, tta_turn=tta_turn)
    for s in seeds
  ]
  first = members[0]
  for s, m in zip(seeds, members, strict=True):
    if dataclasses.replace(m.config, seed=0) != dataclasses.replace(first.config, seed=0):
      raise WorkdirError(
        f"{workdir!r}: seed_{s}'s config differs from seed_{seeds[0]}'s in more than the "
        "seed, so they are not one run's models. Load each seed's folder on its own."
      )
  if len(members) == 1:
    return first
  ensemble = summary.get("ensemble")
  if ensemble is not None:
    threshold = float(ensemble["threshold"])
  else:  # runs from before ensembles were scored: the members' distances' scale
    threshold = float(np.sqrt(np.mean([m.threshold**2 for m in members])))
  return dataclasses.replace(
    first,
    params=tuple(m.params for m in members),
    threshold=threshold,
    members=len(members),
  )
