"""The package's layout holds: layers, one rule each, names kept.

The layers, ground first, are the README's map. A library module may
import only from its own layer or the ones before it; the checks below read
every import statement (function-level ones too) with `ast`.
"""

import ast
import importlib
import os
import pathlib

import pytest

import siamese_jax
from siamese_jax.core import config as config_lib
from siamese_jax.core import streams

PACKAGE = pathlib.Path(siamese_jax.__file__).parent

# Ground first. Top-level modules are listed by name; a subpackage's
# modules share its layer.
LAYERS = [
  {"core", "xla_flags"},
  {"rundir"},
  {"data"},
  {"losses"},
  {"sampling"},
  {"models"},
  {"evaluation"},
  {"training"},
  {"recognition"},
  {"configs", "cli", "programs", "__main__"},
]
SUBPACKAGES = ["core", "rundir", "data", "losses", "sampling", "models", "evaluation", "training",
               "recognition", "programs"]  # fmt: skip


def layer_of(unit: str) -> int:
  for i, units in enumerate(LAYERS):
    if unit in units:
      return i
  if unit in siamese_jax.__all__:  # `from siamese_jax import load_trained`: the package's top
    return len(LAYERS) - 1
  raise AssertionError(f"siamese_jax.{unit} has no layer: add it to LAYERS and the README map")


def unit_of(module: str) -> str:
  """siamese_jax.data.omniglot -> data; siamese_jax.cli -> cli."""
  return module.split(".")[1]


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every siamese_jax import in a file, at any depth."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("siamese_jax"):
      if node.module == "siamese_jax":  # from siamese_jax import x: x is the unit
        out += [(node.lineno, f"siamese_jax.{a.name}") for a in node.names]
      else:
        out.append((node.lineno, node.module))
    elif isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names if a.name.startswith("siamese_jax.")]
  return out


def library_modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def upward_imports(files, root: pathlib.Path = PACKAGE) -> list[str]:
  bad = []
  for path in files:
    rel = path.relative_to(root)
    here = rel.parts[0].removesuffix(".py")
    for line, module in imported_modules(path):
      there = unit_of(module)
      if layer_of(there) > layer_of(here):
        bad.append(f"{rel}:{line} imports {module} (layer {there} is above {here})")
  return bad


def test_no_library_module_imports_from_a_layer_above_its_own():
  assert upward_imports(library_modules()) == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
  # A copy of a core module that imports the loop, lazily, is reported with its line.
  (tmp_path / "core").mkdir()
  copy = tmp_path / "core" / "files.py"
  body = "\n  from siamese_jax.training.loop import train_and_evaluate\n"
  copy.write_text((PACKAGE / "core" / "files.py").read_text() + "\n\ndef f():" + body)
  bad = upward_imports([copy], root=tmp_path)
  assert len(bad) == 1 and "siamese_jax.training.loop" in bad[0] and "core/files.py:" in bad[0]


def test_every_module_has_a_layer_and_few_stay_at_the_top():
  top = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
  assert len(top) <= 6, top
  units = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
  for unit in units - {"__init__", "__pycache__"}:
    layer_of(unit)
  # Every folder of the package is listed (its docstrings are then checked below).
  folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
  assert set(SUBPACKAGES) == folders


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_imports_and_says_what_it_holds(name):
  module = importlib.import_module(f"siamese_jax.{name}")
  assert module.__doc__ and len(module.__doc__.strip()) > 40
  for path in (PACKAGE / name).glob("*.py"):
    mod = importlib.import_module(f"siamese_jax.{name}.{path.stem}" if path.stem != "__init__"
                                  else f"siamese_jax.{name}")  # fmt: skip
    assert mod.__doc__, f"{path} has no module docstring"


def test_every_public_name_is_importable_from_the_package():
  for name in siamese_jax.__all__:
    assert getattr(siamese_jax, name) is not None, name


def test_random_streams_keep_their_values_and_are_distinct():
  # Changing one of these changes every run's numbers: they are pinned.
  assert {s.name: int(s) for s in streams.PairsKey} == {
    "TRAIN_PAIRS": 0, "TEST_PAIRS": 1, "HOLDOUT": 2, "VAL_PAIRS": 3, "SEEN_PAIRS": 4,
    "UNSEEN_PAIRS": 5, "TEST_EPISODES": 7, "VAL_EPISODES": 8, "VAL_BATCHES": 9,
  }  # fmt: skip
  assert {s.name: int(s) for s in streams.EpochKey} == {"BATCHES": 0, "FRESH_PAIRS": 1}
  assert int(streams.FreshPairsKey.WITHIN_GROUP) == 6
  assert int(streams.StepKey.AUGMENT) == 0x61666631
  tables = (streams.PairsKey, streams.EpochKey, streams.FreshPairsKey, streams.StepKey)
  for table in tables:
    values = [int(s) for s in table]
    assert len(set(values)) == len(values)


def test_no_library_module_folds_a_bare_number_into_a_key():
  # fold_in(key, 3) hides which stream it is: the numbers live in core/streams.py.
  bad = []
  for path in library_modules():
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "fold_in"
          and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)):  # fmt: skip
        bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
  assert bad == []


def test_config_encoder_names_are_the_registry():
  from siamese_jax.models import ENCODERS

  assert tuple(ENCODERS) == config_lib.ENCODERS


def test_image_open_and_zipfile_live_in_one_module_each():
  # One decoder, one archive reader: nothing else in the library opens either.
  opens = {p.relative_to(PACKAGE).as_posix() for p in library_modules()
           if "Image.open(" in p.read_text()}  # fmt: skip
  zips = {p.relative_to(PACKAGE).as_posix() for p in library_modules()
          if "zipfile.ZipFile(" in p.read_text()}  # fmt: skip
  assert opens == {"data/images.py"}
  assert zips == {"data/archive.py"}


def test_every_test_that_trains_or_starts_a_process_is_marked_slow():
  # `pytest -m "not slow"` is the edit loop: nothing in it trains a model or
  # starts a program.
  heavy = {"train_and_evaluate", "run_module", "start_module", "start_group", "run_cli",
           "train_step", "train_chunk", "train_epoch"}  # fmt: skip
  unmarked = []
  for path in sorted(pathlib.Path(__file__).parent.glob("test_*.py")):
    tree = ast.parse(path.read_text())
    marks = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
             and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)]  # fmt: skip
    if any("slow" in m for m in marks):
      continue
    for node in tree.body:
      if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
        continue
      calls = [c.func for c in ast.walk(node) if isinstance(c, ast.Call)]
      names = {getattr(f, "id", getattr(f, "attr", "")) for f in calls}
      spawns = any(getattr(getattr(f, "value", None), "id", "") == "subprocess" for f in calls)
      slow = any("slow" in ast.unparse(d) for d in node.decorator_list)
      if (names & heavy or spawns) and not slow:
        unmarked.append(f"{path.name}::{node.name}")
  assert unmarked == []


def test_docs_close_every_code_fence():
  docs = os.path.join(os.path.dirname(__file__), "..", "docs")
  for name in sorted(os.listdir(docs)):
    if name.endswith(".md"):
      text = open(os.path.join(docs, name)).read()
      assert text.count("```") % 2 == 0, name
