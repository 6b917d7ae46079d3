"""The programs: one installed module each, three routes to it, thin experiment modules."""

import pathlib
import subprocess
import sys

import pytest

from siamese_jax import cli, programs

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
