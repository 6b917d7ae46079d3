"""The gallery index: exact blocked search, unknown, calibration, files, faiss."""

import builtins
import os

import numpy as np
import pytest

import siamese_jax as sj
from siamese_jax.core.files import WriteError
from siamese_jax.losses.distances import block_sizes, nearest
from siamese_jax.recognition import Index, calibrate, load_index
from siamese_jax.recognition.index import SearchIndexError
from siamese_jax.rundir.metric_writers import JsonlWriter


def brute_force(q, g, k, exclude_self=False):
  """float64 reference: ids by distance, ties to the lower id."""
  d = np.sqrt(np.maximum(((q[:, None, :].astype(np.float64) - g[None]) ** 2).sum(-1), 1e-7))
  if exclude_self:
    d[np.arange(len(q)), np.arange(len(q))] = np.inf
  ids = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, ids, axis=1), ids


def budget_for(rows: int, queries: int, dim: int) -> int:
  """The memory budget that makes `nearest` take gallery blocks of `rows` rows."""
  return 4 * (2 * min(queries, 256) + 2 * dim) * rows


@pytest.mark.parametrize("rows", [None, 7])  # one gallery block; blocks of 7 rows
def test_search_is_exact_and_blocked_search_equals_one_block(rows):
  rng = np.random.default_rng(0)
  g = rng.normal(size=(50, 8)).astype(np.float32)
  q = rng.normal(size=(13, 8)).astype(np.float32)
  budget = 2**30 if rows is None else budget_for(rows, len(q), 8)
  d, ids = nearest(q, g, 5, budget_bytes=budget)
  want_d, want_ids = brute_force(q, g, 5)
  np.testing.assert_array_equal(np.asarray(ids), want_ids)
  np.testing.assert_allclose(np.asarray(d), want_d, rtol=1e-5)
  one = nearest(q, g, 5)
  np.testing.assert_array_equal(np.asarray(one[1]), np.asarray(ids))


def test_ties_go_to_the_lower_id_across_blocks_and_self_is_excluded():
  # Integer embeddings, each vector four times: every distance ties.
  base = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  g = np.concatenate([base] * 4)  # ids i, i + 6, i + 12, i + 18 are equal
  for rows in (None, 5):  # one block; blocks of 5 rows, the last one clamped
    budget = 2**30 if rows is None else budget_for(rows, 6, 3)
    _, ids = nearest(g[:6], g, 4, budget_bytes=budget)
    np.testing.assert_array_equal(np.asarray(ids)[:, :4], np.arange(6)[:, None] + [0, 6, 12, 18])
    budget = 2**30 if rows is None else budget_for(rows, 24, 3)
    _, ids = nearest(g, g, 3, exclude_self=True, budget_bytes=budget)
    assert (np.asarray(ids) != np.arange(24)[:, None]).all()
    np.testing.assert_array_equal(np.asarray(ids)[0], [6, 12, 18])


def test_classify_answers_unknown_beyond_the_threshold_and_votes():
  g = np.array([[0.0, 0], [0, 0.1], [5, 5], [5, 5.2], [5.1, 5]], np.float32)
  index = Index.from_embeddings(g, ["a", "a", "b", "b", "b"])
  q = np.array([[0, 0.04], [5, 5.05], [20, 20]], np.float32)
  assert list(index.classify(q)) == ["a", "b", "b"]
  assert list(index.classify(q, threshold=1.0)) == ["a", "b", "unknown"]
  # k = 3: two b's outvote the nearest, an a.
  line = Index.from_embeddings(np.array([[0.0], [1.1], [1.2], [-5]], np.float32), list("abba"))
  assert list(line.classify(np.array([[0.5]], np.float32))) == ["a"]
  assert list(line.classify(np.array([[0.5]], np.float32), k=3)) == ["b"]
  # A 1-1 tie goes to the label whose member is nearest.
  two = Index.from_embeddings(np.array([[0.0], [1.0]], np.float32), [7, 9])
  assert list(two.classify(np.array([[0.8]], np.float32), k=2)) == [9]
  dist, ids = index.search(q, 2)
  assert dist.shape == ids.shape == (3, 2) and (np.diff(dist, axis=1) >= 0).all()


def test_save_and_load_round_trip_without_pickle(tmp_path):
  g = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
  index = Index.from_embeddings(g, np.arange(20) % 3, threshold=0.75)
  index.save(tmp_path / "g.index")
  assert os.listdir(tmp_path) == ["g.index"]  # written whole, nothing half-written beside it
  back = load_index(tmp_path / "g.index")
  np.testing.assert_array_equal(np.asarray(back.embeddings), g)
  np.testing.assert_array_equal(back.labels, np.arange(20) % 3)
  assert back.threshold == 0.75 and back.backend == "exact"
  # An object array would need pickle: refused, not executed.
  np.savez(tmp_path / "evil.index", format="siamese_jax.index", labels=np.array([{}], object))
  with pytest.raises(SearchIndexError, match="not a readable index file"):
    load_index(tmp_path / "evil.index")
  np.savez(tmp_path / "other.npz", x=np.zeros(3))
  with pytest.raises(SearchIndexError, match="not a siamese_jax index"):
    load_index(tmp_path / "other.npz")
  fields = dict(np.load(tmp_path / "g.index"))
  np.savez(tmp_path / "v9.npz", **{**fields, "version": np.int32(9)})
  with pytest.raises(SearchIndexError, match="format version 9"):
    load_index(tmp_path / "v9.npz")


def test_bad_embeddings_and_labels_are_refused():
  with pytest.raises(SearchIndexError, match="float\\[N, D\\] embeddings and N labels"):
    Index.from_embeddings(np.zeros((3, 2), np.float32), [1, 2])
  with pytest.raises(SearchIndexError, match="NaN"):
    Index.from_embeddings(np.full((2, 2), np.nan, np.float32), [1, 2])
  with pytest.raises(SearchIndexError, match="integers or strings"):
    Index.from_embeddings(np.zeros((2, 2), np.float32), [1.5, 2.5])
  index = Index.from_embeddings(np.zeros((2, 2), np.float32), [1, 2])
  with pytest.raises(SearchIndexError, match="no model to embed images"):
    index.search_images(np.zeros((1, 28, 28), np.uint8))
  with pytest.raises(SearchIndexError, match="k=3 must lie in 1..2"):
    index.search(np.zeros((1, 2), np.float32), 3)


def test_calibrate_picks_the_best_f1_or_the_asked_precision():
  g = np.array([[0.0], [10.0]], np.float32)
  index = Index.from_embeddings(g, [0, 1])
  # Known queries close by (right), unknown ones (label 2) farther out.
  q = np.array([[0.1], [0.2], [0.3], [9.6], [0.9], [1.0], [1.5], [3.0]], np.float32)
  y = [0, 0, 0, 1, 2, 2, 0, 2]
  cal = calibrate(index, q, y)
  # Up to 0.4: the 4 nearest are right, F1 8/9. Taking the right one at 1.5
  # as well costs the two unknowns at 0.9 and 1.0: F1 10/12.
  assert cal.threshold == pytest.approx(0.4, abs=1e-6)
  assert cal.f1 == pytest.approx(8 / 9) and cal.recall == pytest.approx(4 / 5)
  assert index.threshold == cal.threshold
  assert list(index.classify(q)) == [0, 0, 0, 1, *["unknown"] * 4]
  strict = calibrate(index, q, y, target=1.0)
  assert strict.threshold == pytest.approx(0.4, abs=1e-6) and strict.precision == 1.0
  loose = calibrate(index, q, y, target=0.8)  # the most recall at precision >= 0.8
  assert loose.threshold == pytest.approx(0.9, abs=1e-6) and loose.precision == pytest.approx(0.8)
  with pytest.raises(SearchIndexError, match="no threshold reaches precision"):
    calibrate(index, np.array([[0.9]], np.float32), [2], target=0.5)


def test_without_faiss_asking_for_it_names_the_install(monkeypatch):
  real = builtins.__import__

  def no_faiss(name, *args, **kwargs):
    if name == "faiss":
      raise ImportError("no faiss here")
    return real(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_faiss)
  index = Index.from_embeddings(np.zeros((3, 2), np.float32), [0, 1, 2], backend="faiss-flat")
  with pytest.raises(SearchIndexError, match=r"pip install -e '\.\[faiss\]'"):
    index.search(np.zeros((1, 2), np.float32), 1)


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-hnsw", "faiss-ivf"])
def test_faiss_backends_find_the_exact_neighbours(backend):
  pytest.importorskip("faiss", reason="faiss-cpu is not installed: pip install -e '.[faiss]'")
  rng = np.random.default_rng(2)
  g = rng.normal(size=(2000, 16)).astype(np.float32)
  q = rng.normal(size=(50, 16)).astype(np.float32)
  exact_d, exact_ids = Index.from_embeddings(g, np.arange(2000)).search(q, 10)
  d, ids = Index.from_embeddings(g, np.arange(2000), backend=backend).search(q, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)])
  if backend == "faiss-flat":  # exact: the same neighbours (random data has no ties)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(d, exact_d, rtol=1e-5)
  else:
    assert recall >= 0.8, recall


@pytest.mark.slow
def test_a_trained_model_indexes_images_and_refuses_another_models_index(tmp_path, small_mnist):
  config = sj.Config(epochs=1, batch_size=32)
  sj.train_and_evaluate(config, tmp_path / "a", small_mnist, plots=False)
  sj.train_and_evaluate(config.__class__(epochs=1, batch_size=32, seed=1), tmp_path / "b",
                        small_mnist, plots=False)  # fmt: skip
  a, b = sj.load_trained(tmp_path / "a"), sj.load_trained(tmp_path / "b")
  x, y = small_mnist.train_images[:100], small_mnist.train_labels[:100]
  index = a.index(x[:60], y[:60])
  index.add(x[60:], y[60:])
  d, ids = index.search_images(small_mnist.test_images[:5], 3)
  d2, ids2 = index.search(a.embed(small_mnist.test_images[:5]), 3)
  np.testing.assert_array_equal(ids, ids2)
  np.testing.assert_allclose(d, d2)
  np.testing.assert_allclose(
    d[:, 0], a.distance(small_mnist.test_images[:5], x[ids[:, 0]]), rtol=1e-4
  )
  index.save(tmp_path / "a.index")
  assert load_index(tmp_path / "a.index", model=a).fingerprint == a.fingerprint
  with pytest.raises(SearchIndexError, match="built with another model"):
    load_index(tmp_path / "a.index", model=b)


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory):
  from PIL import Image

  from conftest import synthetic_mnist

  data = synthetic_mnist()
  root = tmp_path_factory.mktemp("recognize")
  sj.train_and_evaluate(sj.Config(epochs=2, batch_size=32), root / "run", data, plots=False)

  def folder(name, images, labels):
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
      (root / name / f"digit{y}").mkdir(parents=True, exist_ok=True)
      Image.fromarray(x).save(root / name / f"digit{y}" / f"{i}.png")
    return str(root / name)

  keep = data.train_labels < 5  # digits 0-4 enrolled; 5-9 are unknown
  gallery = folder("gallery", data.train_images[keep][:50], data.train_labels[keep][:50])
  held = folder("held", data.train_images[300:400], data.train_labels[300:400])
  queries = []
  for i in range(4):
    path = root / f"q{i}.png"
    Image.fromarray(data.test_images[i]).save(path)
    queries.append(str(path))
  return root, gallery, held, queries, data


@pytest.mark.slow
def test_recognize_prints_labels_or_unknown_and_saves_its_index(gallery_run, tmp_path):
  from conftest import run_module

  root, gallery, held, queries, data = gallery_run
  args = ["--workdir", str(root / "run"), *queries]
  r = run_module(
    "experiments.recognize", *args, "--gallery", gallery, "--calibrate-on", held,
    "--save-index", str(tmp_path / "g.index"), "--curve", str(tmp_path / "curve.png"),
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert "enrolled 50 images of 5 classes" in r.stdout and "calibrated on 100 images" in r.stdout
  assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
  rows = [line.split("\t") for line in r.stdout.splitlines() if line.startswith(str(root))]
  assert [row[0] for row in rows] == queries
  for row, y in zip(rows, data.test_labels[:4], strict=True):
    assert row[1] in {f"digit{y}", "unknown"} or y >= 5, (row, y)
  threshold = float(next(ln for ln in r.stdout.splitlines() if ln.startswith("threshold "))[10:])
  for row in rows:  # unknown exactly where the nearest is farther than the threshold
    assert (row[1] == "unknown") == (float(row[2]) > threshold), (row, threshold)
  # The saved index answers the same, with its calibrated threshold.
  again = run_module("experiments.recognize", *args, "--index", str(tmp_path / "g.index"))
  assert again.returncode == 0, again.stderr
  assert again.stdout.splitlines()[-4:] == r.stdout.splitlines()[-4:]
  # A threshold below every distance refuses every query.
  none = run_module(
    "experiments.recognize", *args, "--index", str(tmp_path / "g.index"), "--threshold", "1e-9"
  )
  assert none.returncode == 0, none.stderr
  assert [ln.split("\t")[1] for ln in none.stdout.splitlines()[-4:]] == ["unknown"] * 4


@pytest.mark.slow
def test_bad_galleries_get_one_paragraph_each(gallery_run, tmp_path):
  from conftest import run_module

  root, gallery, _, queries, _ = gallery_run
  (tmp_path / "empty").mkdir()
  (tmp_path / "hollow/cats").mkdir(parents=True)
  (tmp_path / "text/a").mkdir(parents=True)
  (tmp_path / "text/a/readme.png").write_text("not an image")
  # (An image of another size is taken: the run resizes it, tests/test_programs.py.)
  cases = {
    "empty": "holds no class folders",
    "hollow": "a class folder with no images",
    "text": "not a readable image",
    "absent": "no such folder",
  }
  for name, message in cases.items():
    r = run_module(
      "experiments.recognize", "--workdir", str(root / "run"), "--gallery", str(tmp_path / name),
      queries[0],
    )  # fmt: skip
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (
      name,
      r.stderr,
    )
  r = run_module("experiments.recognize", "--workdir", str(root / "run"), queries[0])
  assert r.returncode == 2 and "one of --gallery DIR" in r.stderr


@pytest.mark.parametrize("rows", [None, 640])  # one gallery block; blocks of 640 rows
def test_the_two_pass_selection_is_exact_with_ties(rows):
  # Long rows take the grouped path (index.GROUP columns a group); small
  # integer embeddings make many exact ties, which must go to the lower id.
  from siamese_jax.losses import distances as index_lib

  rng = np.random.default_rng(3)
  n = index_lib.GROUP * 40
  g = rng.integers(0, 3, size=(n, 4)).astype(np.float32)
  q = rng.integers(0, 3, size=(30, 4)).astype(np.float32)
  budget = 2**30 if rows is None else budget_for(rows, 30, 4)
  for k in (1, 7):
    d, ids = nearest(q, g, k, budget_bytes=budget)
    want_d, want_ids = brute_force(q, g, k)
    np.testing.assert_array_equal(np.asarray(ids), want_ids)
    np.testing.assert_allclose(np.asarray(d), want_d, rtol=1e-6)


def test_block_sizes_follow_the_budget():
  assert block_sizes(10_000, 1_000_000, 128, budget_for(1024, 10_000, 128)) == (256, 1024)
  # Whole groups of index.GROUP columns, for the two-pass selection.
  assert block_sizes(10_000, 1_000_000, 128, budget_for(1000, 10_000, 128)) == (256, 960)
  assert block_sizes(3, 50, 8, 2**30) == (3, 50)  # never more than the gallery
  assert block_sizes(3, 50, 8, 1) == (3, 1)  # at least one row


def test_constructed_ties_and_block_overlaps():
  from siamese_jax.losses import distances as index_lib

  # Three groups of GROUP rows; the 2 nearest of 0 are id 130 (d = 1), then a
  # tie at d = 2 between ids 10 and 131: the lower id, 10, must win, though
  # its group's minimum (2) is larger than id 131's group's (1).
  n = 3 * index_lib.GROUP
  x = np.full((n, 1), 3.0, np.float32)
  x[10], x[2 * index_lib.GROUP + 2], x[2 * index_lib.GROUP + 3] = 2.0, 1.0, 2.0
  _, ids = nearest(np.zeros((1, 1), np.float32), x, 2)
  assert list(np.asarray(ids)[0]) == [2 * index_lib.GROUP + 2, 10]
  # Blocks of 4 rows over 10: the last block is clamped to rows 6-9 and
  # overlaps the one before; rows 6 and 7 must not be found twice.
  g = np.arange(10, dtype=np.float32)[:, None]
  _, ids = nearest(np.array([[6.2]], np.float32), g, 3, budget_bytes=budget_for(4, 1, 1))
  assert list(np.asarray(ids)[0]) == [6, 7, 5]


def test_an_index_write_error_speaks_of_the_index(tmp_path):
  index = sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2])
  with pytest.raises(WriteError) as e:
    index.save(str(tmp_path / "no/such/dir/gallery.index"))
  assert "another path" in str(e.value) and "checkpoint" not in str(e.value)
  with pytest.raises(WriteError, match="--resume"):  # a run's file speaks of the run
    JsonlWriter(str(tmp_path / "no/such/metrics.jsonl")).write_scalars(1, {"loss": 1.0})


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_index_file_is_one_error(tmp_path, damage):
  path = str(tmp_path / "g.index")
  sj.Index.from_embeddings(np.eye(4, dtype=np.float32), [0, 1, 2, 3]).save(path)
  raw = bytearray(open(path, "rb").read())
  if damage == "truncate":
    raw = raw[: len(raw) // 2]
  else:
    raw[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)
  open(path, "wb").write(bytes(raw))
  with pytest.raises(SearchIndexError, match="g.index"):
    sj.load_index(path)


def test_search_results_are_sorted_by_the_distances_returned_with_them():
  # Near ties: the expansion ||q||^2 + ||g||^2 - 2 q.g rounds some of them
  # into the wrong order; the exact distances returned decide it.
  rng = np.random.default_rng(0)
  centre = rng.normal(size=(1, 64)).astype(np.float32) * 2.5  # norms ~20, as embeddings
  gallery = centre + rng.normal(size=(4000, 64)).astype(np.float32) * 0.05
  queries = centre + rng.normal(size=(200, 64)).astype(np.float32) * 0.05
  d, ids = (np.asarray(x) for x in nearest(queries, gallery, 10))
  assert (np.diff(d, axis=1) >= 0).all()
  exact = np.sqrt(((queries[:, None].astype(np.float64) - gallery[None]) ** 2).sum(-1))
  best = np.sort(exact, axis=1)[:, :10]
  # The k returned are the k nearest by the exact distance (to float32 rounding).
  np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), best, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("threshold", -1.0, "saved threshold -1.0 is not a distance > 0"),
    ("threshold", np.inf, "saved threshold inf is not a distance > 0"),
    ("version", "two", "its version .* is not a number"),
  ],
)
def test_a_saved_index_with_impossible_fields_is_one_error(tmp_path, field, value, message):
  path = str(tmp_path / "g.index")
  sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=0.5).save(path)
  with np.load(path, allow_pickle=False) as z:
    fields = {k: z[k] for k in z.files}
  fields[field] = np.asarray(value)
  with open(path, "wb") as f:
    np.savez(f, **fields)
  with pytest.raises(SearchIndexError, match=message):
    sj.load_index(path)
  with pytest.raises(SearchIndexError, match="a distance > 0"):
    sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=float("nan"))


def test_an_index_of_another_width_is_blamed_on_the_index():
  index = sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2])
  with pytest.raises(SearchIndexError, match="queries are 2-wide.*index holds 3-wide.*another"):
    index.search(np.zeros((4, 2), np.float32))
