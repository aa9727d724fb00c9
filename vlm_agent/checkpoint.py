"""Atomic, verified training checkpoints.

A checkpoint is a directory `<run_dir>/checkpoints/update_<NNNNNN>/` holding

- `tensors/<name>.pt` : tensor state dicts (trainable weights, value head, optimizer, torch RNG),
  read back with `torch.load(weights_only=True)`;
- `blobs/<name>.pkl`  : pickled Python objects that are not tensors (the trainer writes none: its
  environments go into `state.json` as data, see `vlm_agent.env_state`);
- `state.json`        : counters, Python/NumPy RNG states, the run's config;
- `export/`           : optional, e.g. the LoRA adapter written by `save_pretrained` for use
  outside this trainer;
- `manifest.json`     : format version and the SHA-256 of every file above, written last.

It is written into a temporary sibling directory and renamed into place (`os.replace`, atomic
on POSIX), then `<run_dir>/checkpoints/latest` is rewritten the same way. A process killed at
any moment leaves either the previous checkpoint or the new one, never a half-written one.

Loading verifies the manifest and every hash and raises `CheckpointError` with what to do.
Like `torch.load` of any pickle, only load checkpoints you wrote or trust when they hold blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
CHECKPOINTS_DIRNAME = "checkpoints"
LATEST_FILENAME = "latest"
MANIFEST_FILENAME = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not belong to this configuration."""


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` returns: the directory, its JSON state, tensor dicts and blobs."""

    path: Path
    state: dict[str, Any]
    tensors: dict[str, Any]
    blobs: dict[str, Any]


def checkpoint_dirname(update: int) -> str:
    return f"update_{update:06d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    _fsync_file(temporary)
    os.replace(temporary, path)


def save_checkpoint(
    run_dir: str | Path,
    update: int,
    *,
    state: Mapping[str, Any],
    tensors: Mapping[str, Any],
    blobs: Mapping[str, Any] | None = None,
    export: Callable[[Path], None] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `update` of a run atomically and point `latest` at it.

    Args:
        run_dir: The run directory; checkpoints go to `run_dir/checkpoints/`.
        update: Number of completed updates (names the directory).
        state: JSON-serialisable counters, RNG states and config.
        tensors: name -> object made of tensors, dicts, lists and numbers (torch.save'd).
        blobs: name -> any picklable object.
        export: Optional callback writing extra files (e.g. `model.save_pretrained`) into a folder.
        keep_last: Older complete checkpoints beyond this many are deleted.

    Returns:
        The final checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_dirname(update)
    temporary = root / f".{final.name}.tmp-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    (temporary / "tensors").mkdir(parents=True)
    (temporary / "blobs").mkdir()
    try:
        (temporary / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        for name, value in tensors.items():
            torch.save(value, temporary / "tensors" / f"{name}.pt")
        for name, value in (blobs or {}).items():
            with open(temporary / "blobs" / f"{name}.pkl", "wb") as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        if export is not None:
            export(temporary / "export")
        files = sorted(p for p in temporary.rglob("*") if p.is_file())
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "update": update,
            "files": {str(p.relative_to(temporary)): _sha256(p) for p in files},
        }
        for path in files:
            _fsync_file(path)
        (temporary / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _fsync_file(temporary / MANIFEST_FILENAME)
        if final.exists():
            # Re-saving the same update (e.g. after a resume): move the old one aside first.
            stale = root / f".{final.name}.old-{os.getpid()}"
            os.replace(final, stale)
            shutil.rmtree(stale)
        os.replace(temporary, final)
        _fsync_dir(root)
        _write_text_atomically(root / LATEST_FILENAME, final.name + "\n")
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _prune(root, keep_last)
    return final


def _complete_checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("update_*") if p.is_dir() and (p / MANIFEST_FILENAME).is_file())


def _prune(root: Path, keep_last: int) -> None:
    for stale in root.glob(".update_*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in _complete_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None when it has none."""
    root = Path(run_dir) / CHECKPOINTS_DIRNAME
    pointer = root / LATEST_FILENAME
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / MANIFEST_FILENAME).is_file():
            return candidate
    complete = _complete_checkpoints(root) if root.is_dir() else []
    return complete[-1] if complete else None


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Verify and read a checkpoint directory (or a run directory: its latest checkpoint).

    Raises:
        CheckpointError: no checkpoint, missing manifest, wrong format, a missing or altered file.
    """
    path = Path(path)
    if not (path / MANIFEST_FILENAME).is_file() and (path / CHECKPOINTS_DIRNAME).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{path} holds no complete checkpoint; start without --resume.")
        path = latest
    manifest_path = path / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{path} is not a checkpoint (no {MANIFEST_FILENAME}); it may be an interrupted write. Point --resume at a "
            f"run directory or at one of its checkpoints/update_* folders."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        file_format = manifest["format"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is corrupt ({error}); delete {path} and resume from an older one.") from error
    if file_format != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {file_format}, this version reads format {CHECKPOINT_FORMAT}; "
            "resume it with the vlm_agent version that wrote it."
        )
    for relative, expected in files.items():
        file_path = path / relative
        if not file_path.is_file():
            raise CheckpointError(f"{path} is incomplete: {relative} is missing; delete it and resume from an older one.")
        if _sha256(file_path) != expected:
            raise CheckpointError(
                f"{path} is corrupt: {relative} does not match its SHA-256 in {MANIFEST_FILENAME}; "
                "delete this checkpoint and resume from an older one."
            )
    try:
        state = json.loads((path / "state.json").read_text())
        tensors = {
            p.stem: torch.load(p, map_location="cpu", weights_only=True) for p in sorted((path / "tensors").glob("*.pt"))
        }
        blobs = {}
        for blob_path in sorted((path / "blobs").glob("*.pkl")):
            with open(blob_path, "rb") as handle:
                blobs[blob_path.stem] = pickle.load(handle)
    except Exception as error:  # hashes matched, so this is a version mismatch of a dependency
        raise CheckpointError(f"{path} could not be read ({type(error).__name__}: {error}).") from error
    return LoadedCheckpoint(path=path, state=state, tensors=tensors, blobs=blobs)


def check_compatible(saved_config: Mapping[str, Any], config: Mapping[str, Any], keys: list[str]) -> None:
    """Raise `CheckpointError` naming every key in `keys` whose value differs between the configs."""
    differences = [
        f"{key}: checkpoint {saved_config.get(key)!r} != now {config.get(key)!r}"
        for key in keys
        if saved_config.get(key) != config.get(key)
    ]
    if differences:
        raise CheckpointError(
            "The checkpoint was written by a run with a different configuration ("
            + "; ".join(differences)
            + "). Resume with the original settings or start a new output_dir."
        )


def capture_rng_state(generator: np.random.Generator | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Python, NumPy (global and `generator`) RNG states as JSON, and torch's as tensors."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state()
    json_state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy_legacy": [legacy[0], legacy[1].tolist(), legacy[2], legacy[3], legacy[4]],
        "numpy_generator": generator.bit_generator.state if generator is not None else None,
    }
    tensor_state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensor_state["cuda"] = torch.cuda.get_rng_state_all()
    return json_state, tensor_state


def restore_rng_state(
    json_state: Mapping[str, Any], tensor_state: Mapping[str, Any], generator: np.random.Generator | None = None
) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = json_state["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = json_state["numpy_legacy"]
    np.random.set_state((legacy[0], np.asarray(legacy[1], dtype=np.uint32), legacy[2], legacy[3], legacy[4]))
    if generator is not None and json_state.get("numpy_generator") is not None:
        generator.bit_generator.state = json_state["numpy_generator"]
    torch.set_rng_state(tensor_state["torch"])
    if "cuda" in tensor_state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensor_state["cuda"])
