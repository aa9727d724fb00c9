"""Checks of what callers hand the environments: constructor flags, ``reset`` options, episode state.

Every gym_cards environment refuses what it cannot do with one clear error instead of guessing:
``bool("no")`` is True, so a flag passed as a string would silently turn an option on; an unknown
``reset`` option would silently be ignored; a step after the episode ended would silently pay
the final reward again. These small functions are shared by the card games and ALFWorld.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np


def require_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool``; a ``TypeError`` unless it is ``True``/``False`` (numpy bools too).

    Strings, numbers and None are refused rather than converted: ``bool("False")`` is True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_reset_options(env_name: str, options: Any, known: Collection[str] = ()) -> dict[str, Any]:
    """The ``reset`` options as a dict; ``TypeError`` for a non-mapping, ``ValueError`` for unknown keys.

    ``None`` and an empty mapping mean "no options" (Gymnasium's vector envs pass ``{}`` once they
    have taken their own ``reset_mask`` out).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{env_name}.reset(options=...) expects a mapping (dict) or None, got {options!r} ({type(options).__name__})"
        )
    unknown = sorted(str(key) for key in options if key not in known)
    if unknown:
        accepted = ", ".join(repr(key) for key in sorted(known)) if known else "none"
        raise ValueError(f"{env_name}.reset got unknown options {unknown}; accepted options: {accepted}")
    return dict(options)


def episode_over_error(env_name: str, started: bool) -> RuntimeError:
    """The error of a ``step`` that has no episode to act in (none started yet, or it ended)."""
    if not started:
        return RuntimeError(f"{env_name}: call reset() before step()")
    return RuntimeError(
        f"{env_name}: the episode has ended (terminated or truncated); call reset() before stepping again"
    )
