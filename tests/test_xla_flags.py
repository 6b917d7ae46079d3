"""The XLA flag the programs set: added once, never over the user's own."""

import json

import pytest

from siamese_jax import xla_flags

from conftest import run_module, write_npz


def test_the_flag_is_added_unless_the_option_is_already_set():
  env = {}
  xla_flags.use_project_defaults(env)
  assert env["XLA_FLAGS"] == xla_flags.FLAG
  xla_flags.use_project_defaults(env)  # idempotent
  assert env["XLA_FLAGS"] == xla_flags.FLAG

  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  xla_flags.use_project_defaults(env)
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {xla_flags.FLAG}"

  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"
  env = {"XLA_FLAGS": mine}
  xla_flags.use_project_defaults(env)
  assert env["XLA_FLAGS"] == mine


@pytest.mark.slow
def test_a_program_run_records_the_flags_it_ran_under(tmp_path, small_mnist):
  path = write_npz(tmp_path / "mnist.npz", small_mnist)
  args = ["--data-dir", path, "--epochs", "1", "--batch-size", "32", "--no-progress"]
  r = run_module("experiments.mnist_siamese", *args, "--workdir", str(tmp_path / "a"))
  assert r.returncode == 0, r.stderr
  results = json.loads((tmp_path / "a" / "results.json").read_text())
  assert results["xla_flags"].split() == [xla_flags.FLAG]

  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"
  r = run_module(
    "experiments.mnist_siamese", *args, "--workdir", str(tmp_path / "b"), env={"XLA_FLAGS": mine}
  )
  assert r.returncode == 0, r.stderr
  assert json.loads((tmp_path / "b" / "results.json").read_text())["xla_flags"] == mine
