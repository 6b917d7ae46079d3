"""One-shot episodes, and the reader of Lake et al.'s official runs."""

import os
import shutil

import jax
import numpy as np
import pytest

from siamese_jax.core.errors import DataError
from siamese_jax.evaluation.oneshot import (
  episode_accuracy,
  episodes,
  oneshot_metrics,
  read_runs,
  score_runs,
)

from conftest import write_png, write_runs


def _toy(classes=40, drawers=6, per_group=10):
  labels = np.repeat(np.arange(classes), drawers)
  groups = labels // per_group
  who = np.tile(np.arange(drawers), classes)
  return labels, groups, who


def test_episodes_stay_in_one_group_with_support_and_query_by_other_drawers():
  labels, groups, drawers = _toy()
  support, query = episodes(jax.random.key(0), labels, groups, drawers, ways=5, shots=2, count=300)
  assert support.shape == (300, 5, 2) and query.shape == (300, 5)
  for s, q in zip(support, query, strict=True):
    assert len(np.unique(groups[s])) == 1 and len(np.unique(groups[q])) == 1
    assert groups[s[0, 0]] == groups[q[0]]
    np.testing.assert_array_equal(labels[s], np.repeat(labels[q][:, None], 2, 1))
    assert len(np.unique(labels[q])) == 5
    # One drawer per shot for every class, another for the queries.
    assert (drawers[s] == drawers[s][0]).all() and len(np.unique(drawers[q])) == 1
    assert drawers[q[0]] not in drawers[s[0]]
  again = episodes(jax.random.key(0), labels, groups, drawers, ways=5, shots=2, count=300)
  np.testing.assert_array_equal(again[0], support)
  other = episodes(jax.random.key(1), labels, groups, drawers, ways=5, shots=2, count=300)
  assert not np.array_equal(other[0], support)
  # No group holds 20 classes: no 20-way episodes.
  assert episodes(jax.random.key(0), labels, groups, drawers, ways=20, shots=1, count=5) is None


def test_accuracy_counts_nearest_class_per_query():
  labels, groups, drawers = _toy()
  drawn = episodes(jax.random.key(0), labels, groups, drawers, ways=5, shots=1, count=200)
  perfect = np.eye(40)[labels]
  np.testing.assert_array_equal(episode_accuracy(perfect, *drawn), 1.0)
  # All embeddings equal: every query ties, argmin takes class 0: 1 of 5 right.
  np.testing.assert_allclose(episode_accuracy(np.zeros((len(labels), 3)), *drawn), 0.2)
  # Swapping two classes' embeddings makes exactly those two queries wrong.
  swapped = perfect.copy()
  s, q = drawn[0][:1], drawn[1][:1]
  swapped[q[0, 0]], swapped[q[0, 1]] = perfect[q[0, 1]], perfect[q[0, 0]]
  assert episode_accuracy(swapped, s, q)[0] == pytest.approx(0.6)


def test_metrics_have_a_95_interval_from_the_episodes():
  labels, groups, drawers = _toy(classes=60, per_group=20)
  rng = np.random.default_rng(0)
  emb = np.eye(60)[labels] + rng.normal(0, 0.45, (len(labels), 60))
  m = oneshot_metrics(emb, labels, groups, drawers, jax.random.key(0), prefix="test_", count=400)
  assert m["test_oneshot_episodes"] == 400
  for k in ("20way_1shot", "5way_1shot", "20way_5shot"):
    assert 0.05 < m[f"test_oneshot_{k}"] < 1.0
    assert 0 < m[f"test_oneshot_{k}_ci95"] < 0.05
  # Fewer ways and more shots are easier.
  assert m["test_oneshot_5way_1shot"] > m["test_oneshot_20way_1shot"]
  assert m["test_oneshot_20way_5shot"] > m["test_oneshot_20way_1shot"]


class PixelModel:
  """A stand-in for a trained model: the embedding is the ink itself."""

  def embed(self, images):
    x = np.asarray(images)
    return (x == 0).reshape(len(x), -1).astype(np.float32)


def test_runs_read_from_folder_and_zip(tmp_path):
  root, answers = write_runs(str(tmp_path / "all_runs"))
  runs = read_runs(root, count=2)
  assert [r.name for r in runs] == ["run01", "run02"]
  assert runs[0].training.shape == (20, 105, 105) and runs[0].training.dtype == bool
  np.testing.assert_array_equal(runs[1].answer, answers[1])
  shutil.make_archive(str(tmp_path / "all_runs"), "zip", str(tmp_path), "all_runs")
  zipped = read_runs(str(tmp_path / "all_runs.zip"), count=2)
  np.testing.assert_array_equal(zipped[0].test, runs[0].test)
  scores = score_runs(PixelModel(), runs)
  assert scores["mean_accuracy"] == 1.0 and scores["runs"]["run02"]["errors"] == 0


def test_scoring_counts_wrong_answers(tmp_path):
  root, answers = write_runs(str(tmp_path / "r"), count=1)
  path = os.path.join(root, "run01", "class_labels.txt")
  lines = open(path).read().splitlines()
  a, b = lines[0].split(), lines[1].split()
  lines[0], lines[1] = f"{a[0]} {b[1]}", f"{b[0]} {a[1]}"  # two answers swapped
  open(path, "w").write("\n".join(lines))
  scores = score_runs(PixelModel(), read_runs(root, count=1))
  assert scores["runs"]["run01"]["errors"] == 2 and scores["mean_accuracy"] == 0.9


@pytest.mark.parametrize(
  "breakage, message",
  [
    ("missing", r"run02/test/item07.png is missing"),
    ("bad_line", r"class_labels.txt, line 3: .* is not of the form"),
    ("short", r"gives no answer for item20"),
    ("size", r"run01/training/class05.png is 28x28 pixels, but the official runs' images are"),
    ("no_run", r"run02/class_labels.txt is missing"),
  ],
)
def test_malformed_runs_get_one_paragraph(tmp_path, breakage, message):
  root, _ = write_runs(str(tmp_path / "r"))
  labels = os.path.join(root, "run01", "class_labels.txt")
  if breakage == "missing":
    os.unlink(os.path.join(root, "run02", "test", "item07.png"))
  elif breakage == "bad_line":
    lines = open(labels).read().splitlines()
    lines[2] = "run01/test/item03.png class03"
    open(labels, "w").write("\n".join(lines))
  elif breakage == "short":
    lines = open(labels).read().splitlines()
    open(labels, "w").write("\n".join(lines[:-1]))
    message = message.replace("item20", _last_item(lines[-1]))
  elif breakage == "size":
    write_png(os.path.join(root, "run01", "training", "class05.png"), np.ones((28, 28), bool))
  else:
    shutil.rmtree(os.path.join(root, "run02"))
  with pytest.raises(DataError, match=message) as e:
    read_runs(root, count=2)
  assert "\n" not in str(e.value)


def _last_item(line: str) -> str:
  return line.split()[0].split("/")[-1][:-4]


def test_no_such_runs(tmp_path):
  with pytest.raises(DataError, match="no such file or folder"):
    read_runs(str(tmp_path / "nope"))


def test_runs_built_by_lake_runs_with_fewer_than_20_are_read(tmp_path):
  root, _ = write_runs(str(tmp_path / "runs"), count=5)
  assert [r.name for r in read_runs(root)] == [f"run0{i}" for i in range(1, 6)]
