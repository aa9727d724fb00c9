"""API keys: read from environment variables only, and scrubbed from every message we emit.

Keys never come from command lines (shell history, process lists) or config files (committed by
accident); they are never written to logs, results, cache entries or error messages. A server
that echoes the key back in an error body does not leak it either: every text that leaves an API
agent passes through :func:`redact`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

REDACTED = "[REDACTED]"


def read_api_key(variables: Sequence[str]) -> str | None:
    """The value of the first of ``variables`` that is set and non-empty, else None."""
    for variable in variables:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each (non-trivial) secret replaced by ``[REDACTED]``."""
    for secret in secrets:
        # Very short "keys" (placeholders such as "x") would shred ordinary text; they are not
        # secrets worth hiding.
        if secret and len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text
