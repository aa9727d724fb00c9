"""On-disk cache of model answers, so an interrupted evaluation resumes without paying twice.

An answer is stored under the SHA-256 of everything that determines it: provider, model, server,
prompt, the image's bytes, the sampling settings and, when sampling, how many times this same
question was asked before in the run (see :func:`cache_key`). A rerun with the same seeds asks
the same questions, finds the answers on disk and sends no request. Writes are atomic (a temporary file
renamed into place), so a run killed mid-write leaves either the old entry or the new one; an
entry that is unreadable anyway (disk trouble, hand edits) is ignored with a warning and
overwritten on the next answer.

With temperature > 0 a rerun replays the stored samples (it is deterministic, not a fresh draw);
use a new cache folder to draw new samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT_VERSION = 1
"""Bumped when the entry layout changes; part of every key, so old entries are never misread."""


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's shape, dtype and pixel bytes (hex)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def question_digest(prompt: str, image: np.ndarray) -> str:
    """SHA-256 (hex) of one question: the prompt text and the image."""
    return hashlib.sha256(f"{image_digest(image)}|{prompt}".encode()).hexdigest()


def cache_key(*, provider: str, model: str, base_url: str, prompt: str, image: np.ndarray,
              sampling: Mapping[str, Any], draw: int = 0) -> str:
    """The cache key of one request: SHA-256 of a canonical JSON of what decides the answer.

    ``draw`` numbers repeated identical questions within a run (0 for the first time a state is
    seen, 1 for the second, ...). When sampling (temperature > 0), each repeat is then its own
    sample, as without a cache, instead of one sample replayed for every visit of a state
    (NumberLine has only 30 states: one unlucky sample would decide every episode through it).
    A rerun asks the same questions in the same order, so it finds the same keys.
    """
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "provider": provider,
        "model": model,
        "base_url": base_url,
        "prompt": prompt,
        "image_sha256": image_digest(image),
        "sampling": dict(sampling),
        "draw": draw,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """One stored answer and the tokens it cost when it was first asked."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class ResponseCache:
    """A folder of JSON entries, ``<dir>/<key[:2]>/<key>.json``.

    Safe for the threads of one process and for several processes sharing the folder: entries are
    immutable once renamed into place, and two writers of one key write the same answer.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer, or None if absent or unreadable (unreadable: with a warning)."""
        path = self._path(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(raw)
            answer = CachedAnswer(
                text=entry["text"],
                prompt_tokens=int(entry["prompt_tokens"]),
                completion_tokens=int(entry["completion_tokens"]),
            )
            if not isinstance(answer.text, str) or entry.get("key") != key:
                raise ValueError("entry does not match its key")
        except (ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"ignoring corrupt response-cache entry {path} ({type(error).__name__}: {error}); "
                "the request will be sent again and the entry rewritten",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store an answer atomically (write a temporary file, then rename it into place)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "text": answer.text, "prompt_tokens": answer.prompt_tokens,
                 "completion_tokens": answer.completion_tokens}
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(entry, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
