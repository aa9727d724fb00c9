"""Atomic, verified training checkpoints.

A checkpoint is a directory `<run_dir>/checkpoints/update_<NNNNNN>/` holding

- `tensors/<name>.pt` : tensor state dicts (trainable weights, value head, optimizer, torch RNG),
  read back with `torch.load(weights_only=True)`;
- `blobs/<name>.pkl`  : pickled Python objects that are not tensors (the trainer writes none: its
  environments go into `state.json` as data, see `vlm_agent.rollout.env_state`);
- `state.json`        : counters, Python/NumPy RNG states, the run's config, the environments'
  state, the base model's fingerprint (`model_fingerprint`);
- `export/`           : optional, e.g. the LoRA adapter written by `save_pretrained` for use
  outside this trainer;
- `manifest.json`     : format version and the SHA-256 of every file above, written last.

It is written into a temporary sibling directory and renamed into place (`os.replace`, atomic
on POSIX), then `<run_dir>/checkpoints/latest` is rewritten the same way. A process killed at
any moment leaves either the previous checkpoint or the new one, never a half-written one.

Loading reads only the files the manifest lists, each checked against its SHA-256 before it is
deserialised (a file dropped into the folder is never opened): `state.json` and blobs from the
very bytes that were hashed, tensors with `torch.load(weights_only=True)`. Blobs are unpickled
with an allowlist of the classes an environment is made of (`_BlobUnpickler`), so even a listed
pickle cannot call anything else. Problems raise `CheckpointError` saying what to do.

Damaged checkpoints are evidence, never touched: resuming a run passes over newer damaged ones
(`LoadedCheckpoint.skipped` says which and why), pruning deletes only checkpoints that still
verify, and a save whose folder name is taken writes `update_<NNNNNN>-<k>` beside it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


class RunExistsError(CheckpointError, FileExistsError):
    """A fresh run was asked to write into a directory that already holds a run."""


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` returns: the directory, its JSON state, tensor dicts and blobs.

    `skipped` holds one "name: reason" line per newer checkpoint of the run that was passed over
    because it is damaged (left as it is on disk).
    """

    path: Path
    state: dict[str, Any]
    tensors: dict[str, Any]
    blobs: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def checkpoint_dirname(update: int) -> str:
    return f"update_{update:06d}"


_CHECKPOINT_NAME = re.compile(r"update_(\d+)(?:-(\d+))?")


def _checkpoint_order(path: Path) -> tuple[int, int]:
    """(update, write number) of `update_NNNNNN` or `update_NNNNNN-k`: newer sorts later."""
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    assert match is not None
    return int(match.group(1)), int(match.group(2) or 1)


def _checkpoint_dirs(root: Path) -> list[Path]:
    """Every (final, not temporary) checkpoint folder of `root`, oldest first, damaged or not."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=_checkpoint_order)


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
    write = 1
    while final.exists():
        # Only a damaged checkpoint of this update can be in the way (an intact one would have
        # been resumed from): keep it for inspection and write beside it.
        write += 1
        final = root / f"{checkpoint_dirname(update)}-{write}"
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
    return [p for p in _checkpoint_dirs(root) if (p / MANIFEST_FILENAME).is_file()]


def _prune(root: Path, keep_last: int) -> None:
    for stale in root.glob(".update_*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in _complete_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        # A checkpoint that no longer verifies is evidence of a problem: it is never deleted.
        # Verifying re-reads it once, from the page cache as a rule (it is the one written
        # `keep_last` saves ago).
        if _damage(old) is None:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run that has a manifest, or None when it has none.

    Cheap (no hashing); `load_checkpoint(run_dir)` verifies and passes over damaged ones.
    """
    complete = _complete_checkpoints(Path(run_dir) / CHECKPOINTS_DIRNAME)
    return complete[-1] if complete else None


def _read_manifest(path: Path) -> dict[str, str]:
    """The `files` table of a checkpoint's manifest, checked for shape and safe paths."""
    manifest_path = path / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise CheckpointError(f"{path} is not a checkpoint (no {MANIFEST_FILENAME})")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        file_format = manifest["format"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise TypeError("'files' must map file names to SHA-256 digests")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is corrupt ({error})") from error
    if file_format != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {file_format}, this version reads format {CHECKPOINT_FORMAT}; "
            "resume it with the vlm_agent version that wrote it"
        )
    for relative in files:
        parts = Path(relative).parts
        if Path(relative).is_absolute() or ".." in parts or "\\" in relative or not parts:
            raise CheckpointError(f"{manifest_path} is corrupt (it lists {relative!r}, outside the checkpoint)")
    if "state.json" not in files:
        raise CheckpointError(f"{manifest_path} is corrupt (it does not list state.json)")
    return files


def _check_file(path: Path, relative: str, expected: str, *, keep: bool) -> bytes | None:
    """Hash one listed file; return its bytes when `keep` (the very bytes that were hashed)."""
    file_path = path / relative
    if not file_path.is_file():
        raise CheckpointError(f"{path} is incomplete: {relative} is missing")
    digest = hashlib.sha256()
    kept = io.BytesIO() if keep else None
    with open(file_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            if kept is not None:
                kept.write(chunk)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"{path} is corrupt: {relative} does not match its SHA-256 in {MANIFEST_FILENAME}")
    return kept.getvalue() if kept is not None else None


def _damage(path: Path) -> str | None:
    """Why checkpoint `path` cannot be loaded (manifest, format, missing or altered file), or None."""
    try:
        for relative, expected in _read_manifest(path).items():
            _check_file(path, relative, expected, keep=False)
    except CheckpointError as error:
        return str(error)
    return None


def _kind(relative: str) -> str:
    """How loading uses a listed file: "state", "tensors", "blobs", or "" (only verified, e.g. export/)."""
    parts = Path(relative).parts
    if relative == "state.json":
        return "state"
    if len(parts) == 2 and (parts[0], Path(parts[1]).suffix) in (("tensors", ".pt"), ("blobs", ".pkl")):
        return parts[0]
    return ""


def _load_verified(path: Path) -> LoadedCheckpoint:
    files = _read_manifest(path)
    # State and blobs are deserialised from the very bytes that were hashed. Tensor files can be
    # large (a full fine-tune's optimizer state), so they are hashed streaming and then read by
    # `torch.load(weights_only=True)`, which cannot run code whatever the file holds.
    contents = {
        relative: _check_file(path, relative, expected, keep=_kind(relative) in ("state", "blobs"))
        for relative, expected in sorted(files.items())
    }
    try:
        state = json.loads(contents["state.json"])
        tensors, blobs = {}, {}
        for relative in contents:
            kind, stem = _kind(relative), Path(relative).stem
            if kind == "tensors":
                tensors[stem] = torch.load(path / relative, map_location="cpu", weights_only=True)
            elif kind == "blobs":
                blobs[stem] = _BlobUnpickler(io.BytesIO(contents[relative])).load()
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} could not be read ({error})") from error
    except Exception as error:  # hashes matched, so this is a version mismatch of a dependency
        raise CheckpointError(f"{path} could not be read ({type(error).__name__}: {error})") from error
    return LoadedCheckpoint(path=path, state=state, tensors=tensors, blobs=blobs)


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Verify and read a checkpoint directory, or a run directory's newest intact checkpoint.

    Only files listed in the manifest are read, each verified against its SHA-256 before it is
    deserialised. Given a run directory, newer checkpoints that fail verification are passed
    over (and left as they are); `LoadedCheckpoint.skipped` says which and why.

    Raises:
        CheckpointError: no checkpoint, missing manifest, wrong format, a missing or altered file.
    """
    path = Path(path)
    if (path / MANIFEST_FILENAME).is_file() or not (path / CHECKPOINTS_DIRNAME).is_dir():
        try:
            return _load_verified(path)
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}; it is left as it is. Point --resume at a run directory, or start a new --output_dir"
            ) from error
    candidates = _checkpoint_dirs(path / CHECKPOINTS_DIRNAME)
    if not candidates:
        raise CheckpointError(f"{path} holds no complete checkpoint; start without --resume")
    skipped: list[str] = []
    for candidate in reversed(candidates):
        try:
            loaded = _load_verified(candidate)
        except CheckpointError as error:
            skipped.append(f"{candidate.name}: {error}")
            continue
        loaded.skipped = skipped
        return loaded
    raise CheckpointError(
        f"{path} holds no usable checkpoint ({'; '.join(skipped)}). The damaged folders are left as they are: "
        f"start a new --output_dir, or move {path} away to start this run over"
    )


class _BlobUnpickler(pickle.Unpickler):
    """Unpickles only what an environment's state is made of; any other global is refused.

    A pickle can call any importable callable while it loads; this one may only reach the exact
    NumPy/Gymnasium names below and classes defined in `gym_cards.envs` and `gym_cards.core` (the
    card games and their parts), none of which runs commands, opens files or imports modules
    named by the data. (ALFWorld's environment is not picklable; its state is not a blob.)
    """

    ENVIRONMENT_MODULES = ("gym_cards.envs.", "gym_cards.core.")

    ALLOWED = {
        "builtins": {"dict", "list", "tuple", "set", "frozenset", "bytearray", "complex", "slice", "range"},
        "collections": {"OrderedDict", "deque", "defaultdict"},
        "copyreg": {"_reconstructor"},
        "numpy": {"dtype", "ndarray"},
        "numpy._core.multiarray": {"scalar", "_reconstruct"},
        "numpy.core.multiarray": {"scalar", "_reconstruct"},
        "numpy._core.numeric": {"_frombuffer"},
        "numpy.core.numeric": {"_frombuffer"},
        "numpy.random._pickle": {"__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"},
        "numpy.random._pcg64": {"PCG64", "PCG64DXSM"},
        "numpy.random._mt19937": {"MT19937"},
        "numpy.random._philox": {"Philox"},
        "numpy.random._sfc64": {"SFC64"},
        "numpy.random.bit_generator": {"__pyx_unpickle_SeedSequence", "SeedSequence"},
        "gymnasium.envs.registration": {"EnvSpec"},
        "gymnasium.spaces.box": {"Box"},
        "gymnasium.spaces.discrete": {"Discrete"},
        "gymnasium.spaces.multi_discrete": {"MultiDiscrete"},
        "gymnasium.spaces.dict": {"Dict"},
        "gymnasium.spaces.tuple": {"Tuple"},
        "gymnasium.spaces.text": {"Text"},
        "gymnasium.wrappers.common": {"TimeLimit", "OrderEnforcing", "PassiveEnvChecker"},
    }

    def find_class(self, module: str, name: str) -> Any:
        if name in self.ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module.startswith(self.ENVIRONMENT_MODULES):
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:  # defined there, not imported
                return found
        raise pickle.UnpicklingError(
            f"a blob refers to {module}.{name}, which is not part of an environment's state; refusing to load it"
        )


#: Files of a model folder that decide what the model computes: its config and its weights.
MODEL_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_fingerprint(model_path: str | Path) -> dict[str, str] | None:
    """SHA-256 of a local model folder's `config.json` and of every weights file, by file name.

    The path alone does not identify a model: another model (or the same architecture with other
    weights) may be put at the same path between a run and its resume. The full bytes are hashed,
    because headers and sizes are equal for two models of one shape with different weights.
    Cost: one read of the weights per run start, up to 4 files in parallel. Measured on a busy
    2-core machine: 1 GiB in 2.7 s, no longer than merely reading it (2.7 s); at that rate the 15 GB
    of a 7B model in bfloat16 take about 40 s, next to minutes of loading it. None for a hub id,
    which is not a local folder.
    """
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in MODEL_WEIGHT_SUFFIXES)
    )
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(files)))) as pool:
        return dict(zip((p.name for p in files), pool.map(_sha256, files)))


def check_same_model(saved: Mapping[str, str] | None, current: Mapping[str, str] | None, model_path: Any) -> None:
    """Raise `CheckpointError` when two `model_fingerprint`s differ (None: nothing to compare)."""
    if saved is None or current is None:
        return
    differing = sorted(name for name in set(saved) | set(current) if saved.get(name) != current.get(name))
    if differing:
        shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
        raise CheckpointError(
            f"the model at {model_path} is not the base model this run started from ({shown} changed since); "
            "resume with the original model, or start a new --output_dir"
        )


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
