"""Property-based tests: pair generation and the IDX reader on arbitrary input."""

import gzip

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamese_jax import DataError, make_pairs
from siamese_jax.data.idx import parse_idx, read_idx

from conftest import idx_bytes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
  num_classes=st.integers(2, 5),
  labels=st.lists(st.integers(0, 4), min_size=0, max_size=80),
  seed=st.integers(0, 2**31 - 1),
)
def test_make_pairs_on_arbitrary_labels(num_classes, labels, seed):
  labels = np.array(labels, dtype=np.int64) % num_classes
  counts = np.bincount(labels, minlength=num_classes)
  try:
    pairs, y = make_pairs(jax.random.key(seed), labels, num_classes=num_classes)
  except DataError as e:
    assert counts.min() < 2, "refused labels that have 2+ examples per class"
    assert "at least 2 examples" in str(e)
    return
  assert counts.min() >= 2, "accepted a class with fewer than 2 examples"
  n = counts.min() - 1
  assert pairs.shape == (2 * num_classes * n, 2) and y.shape == (2 * num_classes * n,)
  assert ((pairs >= 0) & (pairs < len(labels))).all()
  np.testing.assert_array_equal(y, np.tile([1.0, 0.0], num_classes * n))
  same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
  np.testing.assert_array_equal(same, y == 1.0)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_parse_idx_on_random_bytes(data):
  try:
    arr = parse_idx(data)
  except DataError:
    return
  assert arr.dtype == np.uint8 and arr.size == len(data) - 4 - 4 * arr.ndim


@SETTINGS
@given(
  shape=st.lists(st.integers(0, 6), min_size=1, max_size=3),
  flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
  cut=st.one_of(st.none(), st.integers(0, 10**6)),
  gz=st.booleans(),
)
def test_read_idx_on_mutated_files(tmp_path_factory, shape, flips, cut, gz):
  arr = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
  raw = idx_bytes(arr)
  if gz:
    raw = gzip.compress(raw)
  raw = bytearray(raw)
  for pos, mask in flips:
    if raw:
      raw[pos % len(raw)] ^= mask
  if cut is not None and raw:
    raw = raw[: cut % len(raw)]
  path = tmp_path_factory.mktemp("idx") / "f"
  path.write_bytes(bytes(raw))
  try:
    out = read_idx(path)
  except DataError as e:
    assert str(path) in str(e)
    return
  assert out.dtype == np.uint8
