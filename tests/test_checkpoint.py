"""Checkpoints: round trip, atomicity, corruption and mismatch errors, RNG capture."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from vlm_agent.training.checkpoint import (
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


# ---------------------------------------------------------------- hostile and damaged folders


class _CreatesMarker:
    """Unpickling this object opens (so creates) a file: what a hostile pickle would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _relist(path, relative: str) -> None:
    """Add a file to the manifest with its true hash (a hostile manifest, not a corrupt one)."""
    import hashlib

    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][relative] = hashlib.sha256((path / relative).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_dropped_in_pickle_is_never_opened(tmp_path) -> None:
    import pickle

    path = write(tmp_path / "run", 1)
    marker = tmp_path / "pwned"
    (path / "blobs" / "x.pkl").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    torch.save({"w": torch.ones(1)}, path / "tensors" / "extra.pt")
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.path == path and not loaded.skipped
    assert set(loaded.blobs) == {"envs"} and set(loaded.tensors) == {"trainable"}
    assert not marker.exists()


def test_a_listed_pickle_may_not_call_anything_but_environment_classes(tmp_path) -> None:
    import pickle

    path = write(tmp_path, 1)
    marker = tmp_path / "pwned"
    (path / "blobs" / "x.pkl").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    _relist(path, "blobs/x.pkl")
    with pytest.raises(CheckpointError, match="refers to (builtins|io).open, which is not part of an environment"):
        load_checkpoint(path)
    assert not marker.exists()


class _CallsGlobal:
    """Unpickling this object calls `function(*arguments)`."""

    def __init__(self, function, *arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return (self.function, self.arguments)


def test_the_blob_allowlist_admits_environment_classes_only(tmp_path) -> None:
    import pickle

    from gym_cards import cli
    from gym_cards.core import cards

    path = write(tmp_path, 1)
    for hostile, name in ((_CallsGlobal(cli.main, ["list"]), "gym_cards.cli.main"),
                          (_CallsGlobal(cards.draw_card, None), "gym_cards.core.cards.draw_card"),
                          (_CallsGlobal(getattr, "text", "upper"), "builtins.getattr")):
        (path / "blobs" / "x.pkl").write_bytes(pickle.dumps(hostile))
        _relist(path, "blobs/x.pkl")
        with pytest.raises(CheckpointError, match=f"refers to {name}, which is not part of an environment"):
            load_checkpoint(path)


def test_real_environments_pass_the_blob_allowlist(tmp_path) -> None:
    import gymnasium as gym

    import gym_cards  # noqa: F401 - registers the ids

    envs = [gym.make(env_id) for env_id in ("gym_cards/Blackjack-v0", "gym_cards/Points24-v0")]
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    save_checkpoint(tmp_path, 1, state={"update": 1}, tensors={}, blobs={"envs": envs})
    restored = load_checkpoint(tmp_path).blobs["envs"]
    assert [env.unwrapped.describe() for env in restored] == [env.unwrapped.describe() for env in envs]
    assert [env.unwrapped.np_random.random() for env in restored] == [env.unwrapped.np_random.random() for env in envs]


def test_manifest_paths_outside_the_checkpoint_are_refused(tmp_path) -> None:
    path = write(tmp_path, 1)
    (tmp_path / "outside.pkl").write_bytes(b"x")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../outside.pkl"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        load_checkpoint(path)


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_passes_over_a_damaged_latest_checkpoint_and_never_touches_it(tmp_path) -> None:
    write(tmp_path, 1, weight=1.0)
    damaged = write(tmp_path, 2, weight=2.0)
    (damaged / "manifest.json").unlink()
    before = _tree(damaged)

    loaded = load_checkpoint(tmp_path)
    assert loaded.state["update"] == 1
    assert len(loaded.skipped) == 1 and loaded.skipped[0].startswith("update_000002: ")
    assert "no manifest.json" in loaded.skipped[0]

    # Training on from update 1 saves update 2 again: beside the damaged one, not over it.
    again = write(tmp_path, 2, weight=3.0)
    assert again.name == "update_000002-2"
    assert _tree(damaged) == before
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "update_000002-2"
    newest = load_checkpoint(tmp_path)
    assert newest.path == again and not newest.skipped  # the damaged one is older now
    # Pruning keeps the damaged folder too, however many checkpoints follow.
    for update in (3, 4, 5):
        write(tmp_path, update)
    assert damaged.is_dir() and _tree(damaged) == before


def test_pruning_never_deletes_a_checkpoint_that_fails_verification(tmp_path) -> None:
    corrupt = write(tmp_path, 1)
    (corrupt / "state.json").write_text("{}")
    before = _tree(corrupt)
    for update in (2, 3, 4):
        write(tmp_path, update)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("update_*"))
    assert names == ["update_000001", "update_000003", "update_000004"]
    assert _tree(corrupt) == before


def test_a_run_without_a_usable_checkpoint_says_what_to_do(tmp_path) -> None:
    path = write(tmp_path, 1)
    (path / "tensors" / "trainable.pt").write_bytes(b"\0")
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(tmp_path)
    message = str(raised.value)
    assert "no usable checkpoint" in message and "update_000001: " in message and "SHA-256" in message
    assert "new --output_dir" in message and "\n" not in message


def test_model_fingerprint_tells_same_shaped_weights_apart(tmp_path) -> None:
    from safetensors.torch import save_file

    from vlm_agent.training.checkpoint import check_same_model, model_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    (model / "tokenizer.json").write_text("{}")
    save_file({"w": torch.zeros(4, 4)}, model / "model.safetensors")
    first = model_fingerprint(model)
    assert set(first) == {"config.json", "model.safetensors"}  # the tokenizer does not decide the weights
    check_same_model(first, model_fingerprint(model), model)

    save_file({"w": torch.ones(4, 4)}, model / "model.safetensors")  # same shapes, other weights
    with pytest.raises(CheckpointError, match=r"not the base model this run started from \(model.safetensors changed"):
        check_same_model(first, model_fingerprint(model), model)
    assert model_fingerprint("Qwen/Qwen2-VL-2B-Instruct") is None  # a hub id: not a folder
    check_same_model(None, first, model)  # checkpoints written before fingerprints: nothing to compare
