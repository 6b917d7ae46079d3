"""Shared fixtures: strict JAX numerics, synthetic MNIST, the real data dir."""

import gzip
import json
import os
import struct
import subprocess
import sys
import time

# One XLA compilation cache for the suite's workers and every program they
# start, in the checkout (`.cache/xla`, ignored by git: a fresh clone starts
# cold). Most slow tests compile the same few programs (a short run on the
# synthetic data), and each subprocess would compile them again from
# nothing; a cache hit is the same executable, so no figure changes. Set
# before jax is imported, so the subprocesses inherit it too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _name, _value in (
  ("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".cache", "xla")),
  ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
  ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1"),
):
  os.environ.setdefault(_name, _value)
# The programs' XLA flag, so that a program run in a worker (`run_module`)
# computes as its process would.
from siamese_jax import xla_flags  # noqa: E402

xla_flags.use_project_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import siamese_jax as sj  # noqa: E402
from siamese_jax.data.dataset import DATA_DIR_ENV, Dataset  # noqa: E402

# Silent broadcasting, e.g. (B, 1) * (B,) -> (B, B), becomes an error.
jax.config.update("jax_numpy_rank_promotion", "raise")


def idx_bytes(arr: np.ndarray) -> bytes:
  """The IDX encoding of a uint8 array."""
  header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
  return header + arr.astype(np.uint8).tobytes()


def write_idx(path, arr: np.ndarray, gz: bool = True) -> str:
  data = idx_bytes(arr)
  path = os.fspath(path)
  if gz:
    with gzip.open(path, "wb") as f:
      f.write(data)
  else:
    with open(path, "wb") as f:
      f.write(data)
  return path


def synthetic_mnist(n_train: int = 600, n_test: int = 200, seed: int = 0) -> Dataset:
  """Learnable fake MNIST: each digit is a fixed random template plus noise."""
  rng = np.random.default_rng(seed)
  templates = rng.integers(0, 256, (10, 28, 28))

  def split(n):
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    noise = rng.integers(-60, 61, (n, 28, 28))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)

  tri, trl = split(n_train)
  tei, tel = split(n_test)
  return Dataset(tri, trl, tei, tel)


def write_mnist_dir(directory, data: Dataset, gz: bool = True) -> str:
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  suffix = ".gz" if gz else ""
  write_idx(os.path.join(directory, "train-images-idx3-ubyte" + suffix), data.train_images, gz)
  write_idx(os.path.join(directory, "train-labels-idx1-ubyte" + suffix), data.train_labels, gz)
  write_idx(os.path.join(directory, "t10k-images-idx3-ubyte" + suffix), data.test_images, gz)
  write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte" + suffix), data.test_labels, gz)
  return directory


@pytest.fixture
def small_mnist() -> Dataset:
  return synthetic_mnist()


@pytest.fixture
def small_mnist_dir(tmp_path, small_mnist) -> str:
  return write_mnist_dir(tmp_path / "mnist", small_mnist)


@pytest.fixture(scope="session")
def mnist_dir() -> str:
  """The real MNIST files, or a visible skip."""
  d = os.environ.get(DATA_DIR_ENV)
  if not d:
    pytest.skip(f"real MNIST not given: set {DATA_DIR_ENV} to a dir of the four IDX files")
  if not os.path.isdir(d):
    pytest.skip(f"{DATA_DIR_ENV}={d} is not a directory")
  return d


@pytest.fixture(scope="session")
def real_mnist(mnist_dir) -> Dataset:
  from siamese_jax.data.idx import load_idx_dir

  return load_idx_dir(mnist_dir)


@pytest.fixture
def no_data_env(monkeypatch):
  """Unsets SIAMESE_JAX_DATA_DIR for tests that pass data dirs explicitly."""
  monkeypatch.delenv(DATA_DIR_ENV, raising=False)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_npz(path, data, **override):
  """A Keras-style mnist.npz of `data`; `override` replaces (or, with None, drops) arrays."""
  arrays = {
    "x_train": data.train_images,
    "y_train": data.train_labels,
    "x_test": data.test_images,
    "y_test": data.test_labels,
    **override,
  }
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return str(path)


def _env(extra=None):
  env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}
  env.update(extra or {})
  return env


# The programs that train, and so draw distances.png unless told not to:
# matplotlib's import and the drawing take seconds a run (docs/performance.md); only
# test_evaluation and test_run look at the figure. Tests that want it pass
# plots=True.
TRAINING_PROGRAMS = ("experiments.mnist_siamese", "experiments.omniglot",
                     "experiments.embedding_2d")  # fmt: skip


def _command(module: str, args, plots: bool) -> list[str]:
  if module in TRAINING_PROGRAMS and not plots:
    args = [*args, "--no-plots"]
  return [sys.executable, "-m", module, *args]


def start_module(module: str, *args: str, env=None, plots: bool = False) -> subprocess.Popen:
  """`python -m module args` from the repo root, without the data-dir variable."""
  return subprocess.Popen(
    _command(module, args, plots),
    cwd=REPO,
    env=_env(env),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _program(module: str) -> str | None:
  """The `siamese_jax.programs` name of `experiments.NAME`, else None."""
  from siamese_jax.programs import PROGRAMS

  prefix, _, name = module.partition(".")
  name = name.replace("_", "-")
  return name if prefix == "experiments" and name in PROGRAMS else None


def _in_process(name: str, args, env) -> subprocess.CompletedProcess:
  """What `python -m experiments.NAME args` does, run in this worker.

  The same `siamese_jax.programs.run` the entry point calls, with this
  worker's XLA flags (the programs', set above) and compiled functions:
  a process would spend seconds importing and compiling. Output, exit code
  and an uncaught exception's traceback come back as a process's would.
  """
  import contextlib
  import io
  import traceback

  from siamese_jax.programs import run

  out, err = io.StringIO(), io.StringIO()
  saved = dict(os.environ)
  os.environ.clear()
  os.environ.update(env)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        code = run(name, list(args))
      except SystemExit as e:  # argparse's usage errors and --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
          print(e.code, file=sys.stderr)
      except Exception:
        traceback.print_exc()
        code = 1
  finally:
    os.environ.clear()
    os.environ.update(saved)
  return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


# Variables a running process cannot take up: a test that sets one runs a process.
_PROCESS_ENV = ("XLA_FLAGS", "JAX_", "CUDA_", "TF_")


def run_module(
  module: str, *args: str, env=None, timeout: float = 300, plots: bool = False
) -> subprocess.CompletedProcess:
  """Runs `python -m module args` to the end; returns returncode, stdout, stderr.

  A program of `siamese_jax.programs` runs in this worker (`_in_process`)
  unless `env` sets a variable only a new process reads. `start_module`
  always starts a process: the tests that signal, kill or group processes,
  and so the `python -m experiments.NAME` entry points, use it.
  """
  name = _program(module)
  if name and not any(k.startswith(_PROCESS_ENV) for k in env or {}):
    return _in_process(name, _command(module, args, plots)[3:], _env(env))
  return subprocess.run(
    _command(module, args, plots),
    cwd=REPO,
    env=_env(env),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


# Timing, and what describes the machine or the program rather than the run
# (runs compared across processes set XLA_FLAGS differently, and record it).
TIMING = {"epoch_seconds", "total_seconds", "num_seeds_in_program", "num_devices",
          "num_processes", "xla_flags"}  # fmt: skip


def jsonl(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def results(path):
  with open(path) as f:
    return {k: v for k, v in json.load(f).items() if k not in TIMING}


def strip(path):
  """A run's metrics.jsonl lines or JSON file, without TIMING's fields."""
  return jsonl(path) if str(path).endswith(".jsonl") else results(path)


def assert_same_run(a, b):
  """Two run directories hold the same metrics, results and checkpoint state."""
  same_files(a, b, names=("metrics.jsonl", "results.json", "checkpoint.msgpack"))


def wait_for(path, proc, timeout=120):
  """Waits until `path` exists, failing if `proc` ends or `timeout` seconds pass."""
  t = time.time()
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()
    assert time.time() - t < timeout
    time.sleep(0.01)


def same_files(a, b, names=("config.json", "metrics.jsonl", "results.json", "checkpoint.msgpack")):
  for name in names:
    pa, pb = os.path.join(a, name), os.path.join(b, name)
    if name.endswith(".jsonl"):
      assert jsonl(pa) == jsonl(pb), name
    elif name.endswith(".json"):
      assert results(pa) == results(pb), name
    else:
      assert checkpoint_state(pa) == checkpoint_state(pb), name


def checkpoint_state(path) -> bytes:
  """The saved training state of a checkpoint file, as bytes: what "bitwise" compares.

  The file as a whole also carries the epochs' metrics lines, whose
  epoch_seconds differ between two otherwise identical runs.
  """
  import flax.serialization

  with open(path, "rb") as f:
    raw = f.read()
  payload = raw.split(b"\n", 1)[1] if raw.startswith(b"siamese_jax checkpoint") else raw
  d = flax.serialization.msgpack_restore(payload)
  return flax.serialization.msgpack_serialize(
    {k: d[k] for k in ("state", "epoch", "step_in_epoch", "data_key")}
  )


# Omniglot, small and synthetic, in the official layout ------------------------

OMNIGLOT_ENV = "SIAMESE_JAX_OMNIGLOT_DIR"


def omniglot_char(rng: np.random.Generator) -> np.ndarray:
  """A random character: a few thick strokes, as bool[105, 105] (False = ink)."""
  img = np.ones((105, 105), bool)
  for _ in range(3):
    (r0, c0), (r1, c1) = rng.integers(15, 90, (2, 2))
    for t in np.linspace(0, 1, 60):
      r, c = int(r0 + t * (r1 - r0)), int(c0 + t * (c1 - c0))
      img[r - 4 : r + 4, c - 4 : c + 4] = False
  return img


def drawn(template: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One drawer's copy of a character: shifted by a few pixels."""
  dr, dc = rng.integers(-3, 4, 2)
  return np.roll(template, (dr, dc), axis=(0, 1))


def write_png(path, pixels: np.ndarray) -> None:
  from PIL import Image

  os.makedirs(os.path.dirname(path), exist_ok=True)
  mode = "1" if pixels.dtype == bool else "L"
  Image.fromarray(pixels if mode == "L" else pixels.astype(np.uint8) * 255).convert(mode).save(path)


# (alphabets, characters each, drawers) of each synthetic split.
OMNIGLOT_SHAPE = {"images_background": (3, 4, 4), "images_evaluation": ((20, 6), None, 6)}


def write_omniglot(root, *, zipped: bool = False, seed: int = 0) -> str:
  """A small Omniglot in the official layout: 3 background alphabets of 4
  characters by 4 drawers; 2 evaluation alphabets of 20 and 6 characters by
  6 drawers. Character ids run on over both splits, as the official ones."""
  import shutil

  rng = np.random.default_rng(seed)
  root = os.fspath(root)
  char_id = 0
  for split, (alphabets, chars, drawers) in OMNIGLOT_SHAPE.items():
    sizes = alphabets if isinstance(alphabets, tuple) else (chars,) * alphabets
    for a, n_chars in enumerate(sizes):
      for c in range(n_chars):
        char_id += 1
        template = omniglot_char(rng)
        for d in range(drawers):
          path = os.path.join(
            root, split, f"Alpha{a}_{split[7:10]}", f"character{c + 1:02d}",
            f"{char_id:04d}_{d + 1:02d}.png",
          )  # fmt: skip
          write_png(path, drawn(template, rng))
    if zipped:
      shutil.make_archive(os.path.join(root, split), "zip", root, split)
      shutil.rmtree(os.path.join(root, split))
  return root


@pytest.fixture(scope="session")
def omniglot_dir(tmp_path_factory) -> str:
  return write_omniglot(tmp_path_factory.mktemp("omniglot"))


@pytest.fixture(scope="session")
def real_omniglot_dir() -> str:
  path = os.environ.get(OMNIGLOT_ENV)
  if not path:
    pytest.skip(f"real Omniglot not given: set {OMNIGLOT_ENV} to a folder of its official zips")
  return path


def write_runs(root, count=2, seed=0) -> tuple[str, list[np.ndarray]]:
  """Runs in Lake's layout: run NN's test items are the training characters in
  a shuffled order, each drawn again with a small shift."""
  rng = np.random.default_rng(seed)
  answers = []
  for r in range(1, count + 1):
    name = f"run{r:02d}"
    chars = [omniglot_char(rng) for _ in range(20)]
    order = rng.permutation(20)
    lines = []
    for k, c in enumerate(chars):
      write_png(os.path.join(root, name, "training", f"class{k + 1:02d}.png"), c)
    for i, k in enumerate(order):
      write_png(os.path.join(root, name, "test", f"item{i + 1:02d}.png"),
                np.roll(chars[k], 1, axis=1))  # fmt: skip
      lines.append(f"{name}/test/item{i + 1:02d}.png {name}/training/class{k + 1:02d}.png")
    with open(os.path.join(root, name, "class_labels.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
    answers.append(order)
  return root, answers


@pytest.fixture(scope="session")
def data():
  """Synthetic MNIST shared by a worker's tests (read only: `small_mnist` is each test's own)."""
  return synthetic_mnist()


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory, data):
  """A finished two-epoch MNIST-style run, its data folder, and a gallery of its images.

  Trained once per worker and shared: tests copy it before changing anything.
  """
  root = tmp_path_factory.mktemp("mnist_run")
  data_dir = write_mnist_dir(root / "data", data)
  workdir = root / "run"
  sj.train_and_evaluate(sj.Config(epochs=2, batch_size=32), workdir, data, plots=False)
  gallery = root / "gallery"
  for i in range(6):
    folder = gallery / f"digit{data.test_labels[i]}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.test_images[i]).save(folder / f"{i}.png")
  return str(workdir), data_dir, str(gallery)


def png_header_only(path, width, height):
  """A PNG whose header declares width x height 1-bit pixels, with one tiny data chunk."""
  import zlib

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
  raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
  open(path, "wb").write(raw + chunk(b"IEND", b""))
  return str(path)


PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
  """Whether `path` is a PNG file of some size (a drawn figure, not an empty one)."""
  with open(path, "rb") as f:
    return f.read(8) == PNG and os.path.getsize(path) > 1000
