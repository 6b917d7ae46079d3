"""Checkpoints that prove themselves: checksums, the previous one, the metrics history they carry."""

import json
import os

import jax
import numpy as np
import pytest

import siamese_jax as sj
from siamese_jax.core.errors import WorkdirError
from siamese_jax.rundir import checkpoint
from siamese_jax.rundir.checkpoint import reconcile_metrics
from siamese_jax.rundir.metric_writers import JsonlWriter

from conftest import checkpoint_state, jsonl, synthetic_mnist


def tiny_checkpoint(tmp_path, epoch=1):
  config = sj.Config(epochs=3, hidden_sizes=(8,))
  state = sj.create_train_state(jax.random.key(0), config)
  ckpt = checkpoint.Checkpoint(state, epoch, 0, {}, np.zeros(2, np.uint32), [["x\n"]])
  checkpoint.save(str(tmp_path), ckpt, config)
  return config, state


def test_a_flipped_byte_in_a_checkpoint_is_found(tmp_path):
  _, state = tiny_checkpoint(tmp_path)
  path = tmp_path / checkpoint.CHECKPOINT_NAME
  raw = bytearray(path.read_bytes())
  raw[-100] ^= 0x01  # inside the parameters
  path.write_bytes(bytes(raw))
  with pytest.raises(WorkdirError, match="sha256 does not match"):
    checkpoint.load(str(tmp_path), state)


def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(tmp_path, capsys):
  _, state = tiny_checkpoint(tmp_path, epoch=1)
  tiny_checkpoint(tmp_path, epoch=2)  # the first becomes checkpoint.prev.msgpack
  assert (tmp_path / checkpoint.PREVIOUS_NAME).exists()
  (tmp_path / checkpoint.CHECKPOINT_NAME).write_bytes(b"garbage")
  ckpt = checkpoint.load(str(tmp_path), state, fall_back=True)
  assert ckpt.epoch == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "resuming from the previous checkpoint" in err
  # A finished run's model never falls back to an older state.
  with pytest.raises(WorkdirError):
    checkpoint.load(str(tmp_path), state)


def test_when_no_checkpoint_verifies_resume_refuses_in_one_paragraph(tmp_path):
  _, state = tiny_checkpoint(tmp_path)
  tiny_checkpoint(tmp_path)
  for name in (checkpoint.CHECKPOINT_NAME, checkpoint.PREVIOUS_NAME):
    (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-10])
  with pytest.raises(WorkdirError) as e:
    checkpoint.load(str(tmp_path), state, fall_back=True)
  assert "No checkpoint" in str(e.value) and "\n" not in str(e.value)
  assert checkpoint.CHECKPOINT_NAME in str(e.value) and checkpoint.PREVIOUS_NAME in str(e.value)


def test_checkpoint_files_are_as_readable_as_metrics(tmp_path):
  tiny_checkpoint(tmp_path)
  JsonlWriter(tmp_path / "metrics.jsonl").write_scalars(1, {"loss": 1.0})
  mode = os.stat(tmp_path / checkpoint.CHECKPOINT_NAME).st_mode & 0o777
  assert mode == os.stat(tmp_path / "metrics.jsonl").st_mode & 0o777


@pytest.mark.slow
def test_a_corrupt_checkpoint_resumes_from_the_previous_bitwise(tmp_path, data):
  config = sj.Config(epochs=3, batch_size=32)
  sj.train_and_evaluate(config, tmp_path / "ref", data, plots=False)
  two = sj.Config(epochs=2, batch_size=32)
  sj.train_and_evaluate(two, tmp_path / "w", data, plots=False)
  ckpt = tmp_path / "w" / checkpoint.CHECKPOINT_NAME
  ckpt.write_bytes(ckpt.read_bytes()[:-7])  # epoch 2's checkpoint, cut short
  config_before = (tmp_path / "w/config.json").read_text()
  # The checkpoint is read and checked before anything is written: a resume
  # that fails (here: the data is other data) leaves config.json as it was.
  other = synthetic_mnist(seed=5)
  with pytest.raises(WorkdirError, match="other data"):
    sj.train_and_evaluate(config, tmp_path / "w", other, resume=True, plots=False)
  assert (tmp_path / "w/config.json").read_text() == config_before
  sj.train_and_evaluate(config, tmp_path / "w", data, resume=True, plots=False)
  assert jsonl(tmp_path / "w/metrics.jsonl") == jsonl(tmp_path / "ref/metrics.jsonl")
  assert checkpoint_state(tmp_path / "w" / checkpoint.CHECKPOINT_NAME) == checkpoint_state(
    tmp_path / "ref" / checkpoint.CHECKPOINT_NAME
  )
  assert json.loads((tmp_path / "w/config.json").read_text())["epochs"] == 3


def test_a_lost_epoch_line_is_restored_exactly_from_the_checkpoint(tmp_path):
  lines = ['{"epoch": 1, "loss": 0.5}\n', '{"epoch": 2, "loss": 0.25}\n']
  path = tmp_path / "metrics.jsonl"
  path.write_text(lines[0] + '{"epoch": 2, "lo\n' + '{"epoch": 3, "loss": 0.1}\n')
  assert reconcile_metrics(str(path), 2, lines) == (1, lines)
  assert path.read_text() == "".join(lines)  # epoch 3 came after the checkpoint: gone
  path.write_text(lines[1])  # epoch 1 missing altogether
  assert reconcile_metrics(str(path), 2, lines) == (1, lines)
  assert path.read_text() == "".join(lines)


def test_a_lost_line_without_a_copy_is_refused_naming_file_and_epoch(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"epoch": 2, "loss": 0.25}\n')
  with pytest.raises(WorkdirError, match=r"metrics.jsonl lacks a readable line for epoch 1"):
    reconcile_metrics(str(path), 2, None)


def test_the_manager_restores_one_shape_and_reads_format_1_in_one_place(tmp_path):
  import flax.serialization

  config, state = tiny_checkpoint(tmp_path)
  manager = checkpoint.Checkpoints(str(tmp_path), config, [str(tmp_path)])
  lines = ['{"epoch": 1, "loss": 0.5}\n']
  # A mid-epoch checkpoint of one model: its steps' metrics are [K=1, n] like K models'.
  manager.save(state, 1, 3, {"loss": np.ones((1, 3))}, [lines], np.zeros(2, np.uint32))
  (tmp_path / "config.json").write_text("{}")  # to be rewritten, once verified
  ckpt = manager.restore(state, [config], rewrite=[str(tmp_path)], check=lambda c: None)
  assert (ckpt.epoch, ckpt.step_in_epoch, ckpt.partial_metrics["loss"].shape) == (1, 3, (1, 3))
  assert (tmp_path / "metrics.jsonl").read_text() == lines[0]  # restored from the copy
  assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()
  # A check that refuses (other seeds) leaves every file as it was.
  (tmp_path / "metrics.jsonl").write_text("")

  def refuse(c):
    raise WorkdirError("other seeds")

  with pytest.raises(WorkdirError, match="other seeds"):
    manager.restore(state, [config], rewrite=[], check=refuse)
  assert (tmp_path / "metrics.jsonl").read_text() == ""
  # Format 1: no header, no metrics lines, a single model's [n] metrics.
  old = {
    "state": flax.serialization.to_state_dict(state), "epoch": 1, "step_in_epoch": 2,
    "partial_metrics": {"loss": np.ones(2)}, "data_key": np.zeros(2, np.uint32),
    "config": config.to_json(),
  }  # fmt: skip
  for name in (checkpoint.CHECKPOINT_NAME, checkpoint.PREVIOUS_NAME):
    (tmp_path / name).write_bytes(flax.serialization.msgpack_serialize(old))
  (tmp_path / "metrics.jsonl").write_text(lines[0])
  ckpt = manager.restore(state, [config], rewrite=[], check=lambda c: None)
  assert ckpt.history == [lines] and ckpt.partial_metrics["loss"].shape == (1, 2)
  (tmp_path / "metrics.jsonl").write_text("")  # its lines are the file's: a lost one is refused
  with pytest.raises(WorkdirError, match="lacks a readable line for epoch 1"):
    manager.restore(state, [config], rewrite=[], check=lambda c: None)
