"""Config: the original's defaults, validation naming the field, JSON round trip."""

import pytest

from siamese_jax import Config, ConfigError
from siamese_jax.sampling.splits import make_pair_sets, run_keys


def test_defaults_are_the_originals():
  c = Config()
  assert (c.seed, c.epochs, c.batch_size) == (0, 20, 128)
  assert (c.learning_rate, c.rmsprop_decay, c.rmsprop_eps) == (1e-3, 0.9, 1e-7)
  assert (c.margin, c.dropout, c.hidden_sizes) == (1.0, 0.1, (128, 128, 128))
  assert (c.pairs, c.holdout, c.final_relu, c.threshold) == ("fixed", 0, True, 0.5)


@pytest.mark.parametrize(
  "field, value",
  [
    ("batch_size", 0),
    ("batch_size", 2.5),
    ("epochs", 0),
    ("seed", -1),
    ("margin", 0.0),
    ("margin", -1.0),
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("learning_rate", float("nan")),
    ("rmsprop_decay", 1.0),
    ("hidden_sizes", ()),
    ("hidden_sizes", (128, 0)),
    ("pairs", "random"),
    ("holdout", -5),
    ("final_relu", "yes"),
  ],
)
def test_bad_values_raise_value_error_naming_the_field(field, value):
  with pytest.raises(ValueError, match=rf"Config\.{field}=.* is invalid"):
    Config(**{field: value})


def test_json_round_trip_and_unknown_keys():
  c = Config(seed=3, hidden_sizes=(64, 32), pairs="fresh", holdout=100)
  assert Config.from_dict(c.to_dict()) == c
  d = c.to_dict()
  d["learning_rat"] = 0.1
  with pytest.raises(ConfigError, match="Unknown config field.*learning_rat"):
    Config.from_dict(d)


def test_diff_lists_changed_fields():
  assert Config().diff(Config(margin=2.0, seed=1)) == {"seed": (0, 1), "margin": (1.0, 2.0)}
  assert Config().diff(Config()) == {}


def test_config_is_frozen_and_hashable():
  c = Config()
  with pytest.raises(AttributeError):
    c.epochs = 3  # type: ignore[misc]
  assert hash(c) == hash(Config())


def test_a_holdout_too_large_is_a_config_error(small_mnist):
  from siamese_jax import ConfigError

  with pytest.raises(ConfigError, match="holdout=595 leaves too few training images"):
    make_pair_sets(run_keys(0), small_mnist, holdout=595)
  with pytest.raises(ConfigError, match="holdout=600 must be smaller"):
    make_pair_sets(run_keys(0), small_mnist, holdout=600)
  with pytest.raises(ConfigError, match="holdout=5 is too small for validation pairs"):
    make_pair_sets(run_keys(0), small_mnist, holdout=5)


def test_every_field_is_documented_once_in_the_field():
  import dataclasses

  for field in dataclasses.fields(Config):
    assert len(field.metadata["doc"]) > 10, field.name
    assert field.metadata["help"] in (None, field.metadata["doc"]), field.name
    assert field.name + ":" not in Config.__doc__, field.name  # not again in the docstring
  assert Config.__dataclass_fields__["data"].metadata["help"] is None  # recorded, no flag
