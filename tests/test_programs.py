"""The programs: one installed module each, three routes to it, thin experiment modules."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import siamese_jax as sj
from siamese_jax import Config, cli, programs, train_and_evaluate

from conftest import (
  is_png,
  png_header_only,
  run_module,
  synthetic_mnist,
  write_mnist_dir,
  write_npz,
)

ROOT = pathlib.Path(__file__).parent.parent


def test_every_program_has_its_module_and_every_experiment_its_program():
  for name in programs.PROGRAMS:
    module = __import__(f"siamese_jax.programs.{name.replace('-', '_')}", fromlist=["main"])
    assert callable(module.main), name
  experiments = {p.stem for p in (ROOT / "experiments").glob("*.py")} - {"__init__", "benchmark"}
  assert {n.replace("-", "_") for n in programs.PROGRAMS} == experiments


@pytest.mark.parametrize("name", sorted(programs.PROGRAMS))
def test_each_experiment_module_is_a_thin_route_to_its_program(name):
  module = name.replace("-", "_")
  text = (ROOT / "experiments" / f"{module}.py").read_text()
  assert f"from siamese_jax.programs.{module} import main" in text
  assert f'run("{name}")' in text
  assert len(text.splitlines()) <= 20


def test_the_benchmark_experiment_is_a_thin_route_to_the_checkouts_benchmarks():
  # Not a program of the wheel (it times `benchmarks/`), but as thin as one.
  text = (ROOT / "experiments" / "benchmark.py").read_text()
  assert "from benchmarks.speed import main" in text
  assert len(text.splitlines()) <= 20


def test_the_console_script_lists_the_programs_and_refuses_an_unknown_one(capsys):
  assert programs.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert all(name in out for name in programs.PROGRAMS)
  assert programs.main(["mnist-siamse"]) == 2
  assert "unknown program 'mnist-siamse'" in capsys.readouterr().err
  assert programs.main([]) == 2


def test_a_program_names_how_it_was_started_and_leaves_the_cli_as_it_was(capsys):
  with pytest.raises(SystemExit) as e:
    programs.main(["mnist-siamese", "--help"], launcher=("siamese-jax",))
  assert e.value.code == 0
  assert capsys.readouterr().out.startswith("usage: siamese-jax mnist-siamese")
  assert cli.LAUNCHER is None
  assert cli.resume_command("experiments.omniglot", ["--epochs", "2"], "w").startswith(
    "python -m experiments.omniglot"
  )
  cli.LAUNCHER = ["siamese-jax", "omniglot"]
  try:
    assert cli.resume_command("experiments.omniglot", ["--epochs", "2"], "w") == (
      "siamese-jax omniglot --epochs 2 --workdir w --resume"
    )
  finally:
    cli.LAUNCHER = None


@pytest.mark.slow
def test_python_dash_m_siamese_jax_runs_the_same_program():
  r = subprocess.run(
    [sys.executable, "-m", "siamese_jax", "oneshot", "--help"], capture_output=True, text=True,
    cwd=ROOT,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("usage: python -m siamese_jax oneshot")


def test_the_wheel_ships_every_subpackage():
  # What `pip wheel .` packs is what setuptools finds: every folder of the package.
  import tomllib

  config = tomllib.loads((ROOT / "pyproject.toml").read_text())
  found = config["tool"]["setuptools"]["packages"]["find"]["include"]
  assert found == ["siamese_jax", "siamese_jax.*"]
  assert config["project"]["scripts"]["siamese-jax"] == "siamese_jax.programs:main"


def save(path, pixels, mode=None, fmt=None):
  img = Image.fromarray(pixels)
  (img.convert(mode) if mode else img).save(path, format=fmt)
  return str(path)


@pytest.mark.slow
def test_compare_reads_any_image_through_the_runs_input(tmp_path, mnist_run, data, capsys):
  from experiments import compare

  workdir = mnist_run[0]
  img = np.zeros((28, 28), np.uint8)  # a light stroke on black, as MNIST draws a 1
  img[4:24, 12:16] = 255
  paths = {
    "png": save(tmp_path / "a.png", img),
    "jpeg": save(tmp_path / "c.jpg", img, "RGB", "JPEG"),  # colour JPEG
    "1bit": save(tmp_path / "b.png", img > 127, None),  # 1-bit PNG
    "big": save(tmp_path / "d.bmp", np.kron(img, np.ones((2, 2), np.uint8))),  # 56x56 BMP
  }
  for kind, path in paths.items():
    assert cli.run_main(compare.main, ["--workdir", workdir, paths["png"], path]) == 0, kind
    out = capsys.readouterr()
    assert "distance" in out.out and "warning" not in out.err, (kind, out.err)
  # Dark ink on white is the other way round from MNIST's: a warning naming it.
  inverted = save(tmp_path / "inv.png", 255 - img)
  assert cli.run_main(compare.main, ["--workdir", workdir, paths["png"], inverted]) == 0
  err = capsys.readouterr().err
  assert "inv.png" in err and "other way round" in err


@pytest.mark.slow
def test_a_gallery_skips_non_images_and_names_an_unreadable_one(tmp_path, mnist_run, capsys):
  from experiments import recognize

  workdir, _, gallery = mnist_run
  query = os.path.join(gallery, sorted(os.listdir(gallery))[0])
  query = os.path.join(query, os.listdir(query)[0])
  stray = os.path.join(gallery, sorted(os.listdir(gallery))[0], "README.txt")
  open(stray, "w").write("notes")
  try:
    assert cli.run_main(recognize.main, ["--workdir", workdir, "--gallery", gallery, query]) == 0
    err = capsys.readouterr().err
    assert "README.txt" in err and err.count("that are not images") == 1
    broken = os.path.join(os.path.dirname(stray), "broken.png")
    open(broken, "wb").write(b"\x89PNG\r\n\x1a\n not really")
    assert cli.run_main(recognize.main, ["--workdir", workdir, "--gallery", gallery, query]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
  finally:
    for f in (stray, os.path.join(os.path.dirname(stray), "broken.png")):
      if os.path.exists(f):
        os.unlink(f)


@pytest.mark.slow
def test_embed_embeds_your_own_images(tmp_path, mnist_run, data):
  from experiments import embed

  folder = tmp_path / "mine"
  folder.mkdir()
  for i in range(3):
    save(folder / f"img{i}.png", data.test_images[i])
  out = tmp_path / "out"
  argv = ["--workdir", mnist_run[0], "--images", str(folder), "--out", str(out)]
  assert cli.run_main(embed.main, argv) == 0
  emb = np.load(out / "embeddings.npy")
  np.testing.assert_allclose(emb, sj.load_trained(mnist_run[0]).embed(data.test_images[:3]),
                             atol=1e-6)  # fmt: skip
  assert (out / "labels.tsv").read_text().split() == ["img0.png", "img1.png", "img2.png"]


MISSING = "/nonexistent/siamese_jax_input"


PROGRAMS = [
  # (module, argv, exit code, text the message must hold); {run}, {data}, {gallery},
  # {tmp} and {bad_index} are filled in below.
  ("experiments.mnist_siamese", ["--data-dir", MISSING, "--workdir", "{tmp}/w"], 1, MISSING),
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--epochs", "0"], 2, "--epochs"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/nullcfg", "--resume"],
    1,
    "config.json",
  ),  # fmt: skip
  ("experiments.omniglot", ["--data-dir", MISSING, "--workdir", "{tmp}/o"], 1, MISSING),
  ("experiments.embedding_2d", ["--data-dir", MISSING, "--workdir", "{tmp}/e"], 1, MISSING),
  ("experiments.compare", ["--workdir", "{run}", MISSING + ".png", MISSING + ".png"], 1, MISSING),
  ("experiments.compare", ["--workdir", MISSING, "a.png", "b.png"], 1, MISSING),
  (
    "experiments.embed",
    ["--workdir", "{run}", "--images", MISSING, "--out", "{tmp}/x"],
    1,
    MISSING,
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--threshold", "nan"],
    2,
    "--threshold",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--threshold", "-1"],
    2,
    "--threshold",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--precision", "0.9"],
    2,
    "--precision",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "q.png", "--curve", "c.png"],
    2,
    "--curve",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{bad_index}", "q.png", "--index-backend", "exact"],
    2,
    "--index-backend",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--gallery", "{gallery}", "{query}", "--k", "99"],
    2,
    "--k 99",
  ),  # fmt: skip
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{bad_index}", "{query}"],
    1,
    "bad.index",
  ),  # fmt: skip
  ("experiments.open_set", ["--workdir", MISSING], 1, MISSING),
  ("experiments.plot_curves", [MISSING], 1, MISSING),
  ("experiments.plot_curves", ["{tmp}/nullcfg"], 1, "config.json"),
  ("experiments.benchmark", ["--data-dir", MISSING], 1, MISSING),
  ("experiments.keras_reference", ["--data-dir", MISSING], 1, MISSING),
  ("experiments.oneshot", ["--workdir", "{run}", "--runs", MISSING], 1, "MNIST-style run"),
  ("experiments.oneshot", ["--workdir", MISSING, "--runs", MISSING], 1, MISSING),
  ("experiments.oneshot_figures", ["--workdir", MISSING], 1, MISSING),
  ("benchmarks.lake_runs", ["--data-dir", MISSING, "--out", "{tmp}/runs"], 1, MISSING),
  ("benchmarks.lake_runs", ["--out", "{tmp}/r", "--runs", "100"], 2, "run99"),
  ("benchmarks.omniglot_step", ["--data-dir", MISSING], 1, MISSING),
  ("benchmarks.processes", ["--data-dir", MISSING], 1, MISSING),
  ("benchmarks.processes", ["--data-dir", "{data}", "--seeds", "0,x"], 2, "0,x"),
  ("benchmarks.search", ["--backends", "exact,bogus"], 2, "bogus"),
  ("benchmarks.tta", ["--workdir", MISSING], 1, MISSING),
  # Issue 32: integers a run turns into keys or indices.
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--seed", "1099511627776"], 2, "--seed"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--seed", "18446744073709551616"],
    2,
    "--seed",
  ),  # fmt: skip
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--seeds", "0,4294967296"], 2, "--seeds"),
  ("experiments.mnist_siamese", ["--data-dir", "{big_label}", "--workdir", "{tmp}/l"], 1, "label"),
  ("experiments.open_set", ["--workdir", "{run}", "--per-class", "-1"], 2, "--per-class"),
  ("experiments.open_set", ["--workdir", "{run}", "--calibrate-n", "-5"], 2, "--calibrate-n"),
  ("experiments.open_set", ["--workdir", "{run}", "--seed", "-1"], 2, "--seed"),
  ("experiments.oneshot_figures", ["--workdir", "{run}", "--episodes", "0"], 2, "--episodes"),
  # Issue 32: outputs checked before the work, not after it.
  (
    "experiments.oneshot",
    ["--workdir", "{run}", "--runs", MISSING, "--json", "{tmp}/no/s.json"],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.open_set",
    ["--workdir", "{run}", "--json", "{tmp}/no/o.json"],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.recognize",
    [
      "--workdir",
      "{run}",
      "--gallery",
      "{gallery}",
      "q.png",
      "--calibrate-on",
      "{gallery}",
      "--curve",
      "{tmp}/no/c.png",
    ],
    2,
    "{tmp}/no does not exist",
  ),
  (
    "experiments.embed",
    ["--workdir", "{run}", "--split", "test", "--out", "{tmp}/bad.index/x"],
    2,
    "bad.index is a file, not a folder",
  ),
  ("experiments.plot_curves", ["{run}", "--out", "{tmp}"], 2, "is a folder"),
  # Issue 32: sizes the flags allow that no encoder or machine takes; a results.json cut short.
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/c8", "--encoder", "conv4", "--image-size", "8"],
    2,
    "--image-size",
  ),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/h", "--hidden-sizes", "100000000"],
    2,
    "--hidden-sizes",
  ),
  ("experiments.compare", ["--workdir", "{cut}", "a.png", "b.png"], 1, "results.json"),
  ("experiments.compare", ["--workdir", "{empty}", "a.png", "b.png"], 1, "holds no threshold"),
  ("experiments.plot_curves", ["{nokey}"], 1, "line 1 has no train_loss"),
  # Issue 32: bombs, impossible saved fields, a config edited by hand.
  ("experiments.compare", ["--workdir", "{run}", "{bomb}", "{bomb}"], 1, "decompression bomb"),
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{neg_index}", "{query}"],
    1,
    "not a distance > 0",
  ),
  (
    "experiments.recognize",
    ["--workdir", "{run}", "--index", "{str_index}", "{query}"],
    1,
    "is not a number",
  ),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{idx_bomb}", "--workdir", "{tmp}/ib"],
    1,
    "header declares shape (3000000, 28, 28)",
  ),
  (
    "experiments.mnist_siamese",
    [
      "--data-dir",
      "{data}",
      "--workdir",
      "{edited}",
      "--resume",
      "--margin",
      "2",
      "--batch-size",
      "32",
      "--epochs",
      "3",
    ],
    1,
    "margin (run: 1.0, now: 2.0)",
  ),
  # Issue 32: values that cannot work, refused by name or told apart from the learning rate.
  ("experiments.mnist_siamese", ["--data-dir", "{data}", "--rmsprop-eps", "0"], 2, "--rmsprop-eps"),
  (
    "experiments.mnist_siamese",
    ["--data-dir", "{data}", "--workdir", "{tmp}/m", "--margin", "1e30", "--epochs", "1"],
    1,
    "not the learning rate",
  ),  # fmt: skip
  (
    "experiments.mnist_siamese",
    [
      "--data-dir",
      "{data}",
      "--workdir",
      "{tmp}/b",
      "--loss",
      "multi-similarity",
      "--ms-beta",
      "1e30",
      "--classes-per-batch",
      "4",
      "--samples-per-class",
      "4",
      "--epochs",
      "1",
    ],
    1,
    "--ms-beta 1e+30",
  ),  # fmt: skip
]


@pytest.mark.slow
def test_every_program_refuses_bad_input_in_one_paragraph(tmp_path, mnist_run, capsys):
  run, data_dir, gallery = mnist_run
  (tmp_path / "nullcfg").mkdir()
  (tmp_path / "nullcfg/config.json").write_text("null")
  (tmp_path / "nullcfg/metrics.jsonl").write_text("")
  (tmp_path / "bad.index").write_bytes(b"PK\x03\x04 cut short")
  data = synthetic_mnist(n_train=100, n_test=20)
  labels = data.train_labels.astype(np.int64)
  labels[0] = 2**32 + 1  # would wrap into class 1 as int32
  big_label = write_npz(tmp_path / "big_label.npz", data, y_train=labels)
  for name, text in (("cut", '{"threshold'), ("empty", "{}")):
    shutil.copytree(run, tmp_path / name)
    (tmp_path / name / "results.json").write_text(text)
  shutil.copytree(run, tmp_path / "edited")
  edited = json.loads((tmp_path / "edited" / "config.json").read_text())
  (tmp_path / "edited" / "config.json").write_text(json.dumps({**edited, "margin": 2.0}))
  bomb = png_header_only(tmp_path / "bomb.png", 12_000, 12_000)
  for name, field, value in (("neg_index", "threshold", -1.0), ("str_index", "version", "x")):
    path = str(tmp_path / f"{name}.index")
    sj.Index.from_embeddings(np.eye(3, dtype=np.float32), [0, 1, 2], threshold=0.5).save(path)
    with np.load(path, allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
    with open(path, "wb") as f:
      np.savez(f, **{**fields, field: np.asarray(value)})
  idx_bomb = write_mnist_dir(tmp_path / "idx_bomb", data)
  head = b"\x00\x00\x08\x03" + np.array([3_000_000, 28, 28], ">u4").tobytes()
  with open(os.path.join(idx_bomb, "train-images-idx3-ubyte.gz"), "wb") as f:
    f.write(__import__("gzip").compress(head + bytes(1000)))
  shutil.copytree(run, tmp_path / "nokey")
  (tmp_path / "nokey" / "metrics.jsonl").write_text('{"epoch": 1, "train_accuracy": 0.5}\n')
  first = os.path.join(gallery, sorted(os.listdir(gallery))[0])
  fill = {"{run}": run, "{data}": data_dir, "{gallery}": gallery, "{tmp}": str(tmp_path),
          "{big_label}": str(big_label), "{cut}": str(tmp_path / "cut"),
          "{empty}": str(tmp_path / "empty"), "{nokey}": str(tmp_path / "nokey"),
          "{edited}": str(tmp_path / "edited"), "{bomb}": bomb, "{idx_bomb}": idx_bomb,
          "{neg_index}": str(tmp_path / "neg_index.index"),
          "{str_index}": str(tmp_path / "str_index.index"),
          "{bad_index}": str(tmp_path / "bad.index"),
          "{query}": os.path.join(first, os.listdir(first)[0])}  # fmt: skip
  failures = []
  for module, argv, code, text in PROGRAMS:
    args = []
    for a in argv:
      for k, v in fill.items():
        a = a.replace(k, v)
      args.append(a)
    program = __import__(module, fromlist=["main"])
    try:
      rc = cli.run_main(program.main, args)
    except SystemExit as e:  # argparse's usage errors
      rc = e.code
    err = capsys.readouterr().err
    text = text.replace("{tmp}", str(tmp_path))
    if rc != code or text not in err or "Traceback" in err or not err.strip():
      failures.append(f"{module} {' '.join(args)}: exit {rc} (want {code}), stderr {err!r}")
  assert failures == [], "\n".join(failures)


def test_each_program_in_the_table_refuses_from_its_command_line_too():
  # The table calls each `main` through `cli.run_main`; `python -m` runs the module's own
  # `__main__` block, which must do the same, or a refusal arrives under a traceback.
  for module in sorted({module for module, *_ in PROGRAMS}):
    source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
    block = source.split('if __name__ == "__main__":', 1)[-1]
    assert "run_main(main)" in block or "run(" in block, module


@pytest.mark.slow
def test_embedding_2d_command_draws_the_map(tmp_path):
  data_dir = write_mnist_dir(tmp_path / "data", synthetic_mnist())
  r = run_module(
    "experiments.embedding_2d",
    "--data-dir",
    data_dir,
    "--workdir",
    str(tmp_path / "w"),
    "--epochs",
    "2",
    "--batch-size",
    "16",
  )
  assert r.returncode == 0, r.stderr
  assert is_png(tmp_path / "w/embedding_2d.png")
  config = json.loads((tmp_path / "w/config.json").read_text())
  assert config["hidden_sizes"][-1] == 2 and config["final_relu"] is False
  bad = run_module(
    "experiments.embedding_2d",
    "--data-dir",
    data_dir,
    "--workdir",
    str(tmp_path / "x"),
    "--hidden-sizes",
    "128,3",
  )
  assert bad.returncode == 2 and "must end in 2" in bad.stderr


@pytest.mark.slow
def test_plot_curves_command(tmp_path, small_mnist):
  train_and_evaluate(Config(epochs=2, batch_size=16), tmp_path / "w", small_mnist)
  r = run_module("experiments.plot_curves", str(tmp_path / "w"))
  assert r.returncode == 0, r.stderr
  assert is_png(tmp_path / "w/curves.png")
  missing = run_module("experiments.plot_curves", str(tmp_path / "nothing"))
  assert missing.returncode == 1 and "metrics.jsonl not found" in missing.stderr
