"""Checkpoints: round trip, atomicity, corruption and mismatch errors, RNG capture."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from vlm_agent.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def write(run_dir, update: int, weight: float = 1.0):
    return save_checkpoint(
        run_dir,
        update,
        state={"update": update, "config": {"env_id": "gym_cards/NumberLine-v0"}},
        tensors={"trainable": {"w": torch.full((2, 2), weight)}},
        blobs={"envs": {"positions": [1, 2, 3]}},
        export=lambda folder: (folder.mkdir(), (folder / "note.txt").write_text("adapter")),
    )


def test_round_trip_and_latest(tmp_path) -> None:
    write(tmp_path, 1, weight=1.0)
    path = write(tmp_path, 2, weight=2.0)
    assert latest_checkpoint(tmp_path) == path
    loaded = load_checkpoint(tmp_path)  # a run directory resolves to its latest checkpoint
    assert loaded.path == path
    assert loaded.state["update"] == 2
    assert torch.equal(loaded.tensors["trainable"]["w"], torch.full((2, 2), 2.0))
    assert loaded.blobs["envs"] == {"positions": [1, 2, 3]}
    assert (path / "export" / "note.txt").read_text() == "adapter"


def test_keeps_only_the_last_checkpoints(tmp_path) -> None:
    for update in range(1, 5):
        write(tmp_path, update)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("update_*"))
    assert names == ["update_000003", "update_000004"]


def test_interrupted_write_is_ignored(tmp_path) -> None:
    good = write(tmp_path, 1)
    # What a SIGKILL during the next save leaves behind: a temporary folder without a manifest.
    leftover = tmp_path / "checkpoints" / ".update_000002.tmp-999"
    (leftover / "tensors").mkdir(parents=True)
    (leftover / "tensors" / "trainable.pt").write_bytes(b"half written")
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(tmp_path).state["update"] == 1


def test_corrupt_file_gives_clear_error(tmp_path) -> None:
    path = write(tmp_path, 1)
    tensor_file = path / "tensors" / "trainable.pt"
    tensor_file.write_bytes(tensor_file.read_bytes()[:-7] + b"garbage")
    with pytest.raises(CheckpointError, match="corrupt: tensors/trainable.pt does not match its SHA-256"):
        load_checkpoint(path)


def test_missing_file_and_missing_manifest_and_empty_run(tmp_path) -> None:
    path = write(tmp_path / "run", 1)
    (path / "blobs" / "envs.pkl").unlink()
    with pytest.raises(CheckpointError, match="incomplete: blobs/envs.pkl is missing"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(path)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_wrong_format_version(tmp_path) -> None:
    path = write(tmp_path, 1)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(path)


def test_check_compatible_names_the_differences() -> None:
    check_compatible({"env_id": "a", "lora_r": 8}, {"env_id": "a", "lora_r": 8}, ["env_id", "lora_r"])
    with pytest.raises(CheckpointError, match="lora_r: checkpoint 8 != now 16"):
        check_compatible({"env_id": "a", "lora_r": 8}, {"env_id": "a", "lora_r": 16}, ["env_id", "lora_r"])


def test_rng_state_round_trip_through_json() -> None:
    generator = np.random.default_rng(5)
    json_state, tensor_state = capture_rng_state(generator)
    json_state = json.loads(json.dumps(json_state))  # what the checkpoint stores
    first = (random.random(), np.random.rand(), generator.random(), torch.rand(1).item())
    restore_rng_state(json_state, tensor_state, generator)
    assert (random.random(), np.random.rand(), generator.random(), torch.rand(1).item()) == first
