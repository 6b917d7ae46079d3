"""The batch shuffle: a uniformly random permutation from single-array sorts."""

import collections
import itertools

import jax
import numpy as np
import pytest

from siamese_jax.sampling.shuffle import permutation, rounds_needed


def test_rounds_cover_the_size():
  assert rounds_needed(1) == rounds_needed(2) == rounds_needed(100) == 1
  assert rounds_needed(1000) == 2  # 10 position bits, 22 random bits a round
  assert rounds_needed(108_400) == 3  # 17 position bits, 15 random bits a round
  assert rounds_needed(2**24) == 8
  assert rounds_needed(2**24 + 1) == 0  # jax.random.permutation's turn


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 70_000])
def test_a_permutation_and_a_pure_function_of_the_key(n):
  key = jax.random.key(3)
  p = np.asarray(permutation(key, n))
  assert p.dtype == np.int32 and sorted(p.tolist()) == list(range(n))
  assert np.array_equal(p, np.asarray(permutation(key, n)))
  if n >= 7:
    assert not np.array_equal(p, np.asarray(permutation(jax.random.key(4), n)))


def test_every_order_of_five_is_equally_likely():
  n, draws = 5, 60_000
  keys = jax.random.split(jax.random.key(0), draws)
  perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(keys))
  counts = collections.Counter(map(tuple, perms.tolist()))
  assert set(counts) == set(itertools.permutations(range(n)))
  expected = draws / 120
  chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
  assert chi2 < 170  # 119 degrees of freedom: the 99.9% point is 167


def test_several_rounds_leave_no_trace_of_the_original_order():
  # 70,000 elements take 3 rounds; a round that kept its input order (or a
  # lost random mask) would leave positions correlated with indices.
  n = 70_000
  assert rounds_needed(n) == 3
  p = np.asarray(permutation(jax.random.key(1), n))
  assert abs(np.corrcoef(np.arange(n), p)[0, 1]) < 0.02
  # Neighbouring indices land far apart: their position gaps look uniform.
  gaps = np.abs(np.diff(np.argsort(p)))
  assert abs(gaps.mean() / (n / 3) - 1) < 0.03
  assert np.mean(p == np.arange(n)) < 10 / n
  # Elements that tie on one round's 15 random bits keep their order; only
  # the rounds together break the ties. With the last round alone, about
  # half of all neighbours would be such ties, rising in index.
  assert abs(np.mean(np.diff(p) > 0) - 0.5) < 0.01
