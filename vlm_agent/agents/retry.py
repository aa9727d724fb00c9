"""Retries with capped exponential backoff and jitter, for rate limits and server errors.

Rate limits (HTTP 429) and server errors (5xx) from model APIs are transient: the right response
is to wait, longer each time, and try again. Waiting exactly ``base * 2**attempt`` makes every
client that failed together retry together; a random jitter spreads them out. The random draw
comes from a seeded generator, so a test (or a rerun) sees the same waits.

A server that says how long to wait (`Retry-After: 3`, or an HTTP date; OpenAI also sends
`retry-after-ms`) knows better than any schedule: the wait is then at least that long, capped at
`RetryPolicy.max_retry_after_s` (120 s by default) so that a misconfigured server cannot park a
run for hours. This stays a small loop of our own rather than tenacity or the SDKs' retries:
those would add a dependency (tenacity) or hide the retry counts and the seeded waits we report
and test, and the SDKs' loops differ between providers.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def backoff_delay(attempt: int, base_s: float, cap_s: float, jitter: float, unit_draw: float) -> float:
    """Wait before retry number ``attempt`` (0-based), in seconds.

    ``delay = min(cap_s, base_s * 2**attempt) * (1 - jitter + jitter * unit_draw)``

    so the wait grows exponentially, never exceeds ``cap_s``, and a fraction ``jitter`` of it is
    random (``unit_draw`` uniform in [0, 1)). ``jitter = 0`` gives the plain exponential schedule,
    ``jitter = 1`` "full jitter" (uniform in [0, capped delay)).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must lie in [0, 1], got {jitter}")
    if not 0.0 <= unit_draw < 1.0:
        raise ValueError(f"unit_draw must lie in [0, 1), got {unit_draw}")
    # Cap the exponent first: 2**attempt overflows a float long before it matters.
    capped = min(cap_s, base_s * 2.0 ** min(attempt, 62))
    return capped * (1.0 - jitter + jitter * unit_draw)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asked to wait, from `retry-after-ms` or `Retry-After`; None if it did not say.

    `Retry-After` is either a number of seconds or an HTTP date (RFC 9110, section 10.2.3); a date
    in the past means 0. Unparseable values count as not said. `headers` must look up names
    without regard to case (as httpx's headers do).
    """
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0.0:
            return value
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a date without a zone is read as such
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetriesExhaustedError(RuntimeError):
    """Raised when a call still fails after the last retry; the message says what to change."""


@dataclass
class RetryPolicy:
    """How often and how long to retry transient failures.

    Attributes:
        max_retries: Retries after the first attempt (0: fail at once).
        base_delay_s: Wait before the first retry, before jitter.
        max_delay_s: Upper bound of any single wait of the backoff schedule.
        max_retry_after_s: Upper bound of a wait a server asked for with `Retry-After`.
        jitter: Random fraction of each wait, in [0, 1].
        seed: Seed of the jitter draws.
        sleep: The function that waits; tests pass one that records the waits instead.
    """

    max_retries: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 120.0
    jitter: float = 0.5
    seed: int = 0
    sleep: Callable[[float], None] = time.sleep
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("base_delay_s, max_delay_s and max_retry_after_s must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must lie in [0, 1], got {self.jitter}")
        self._rng = random.Random(self.seed)

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt``, drawing the jitter from the seeded generator."""
        return backoff_delay(attempt, self.base_delay_s, self.max_delay_s, self.jitter,
                             self._rng.random())

    def call(self, function: Callable[[], T], is_transient: Callable[[BaseException], bool],
             on_retry: Callable[[int, BaseException, float], None] | None = None,
             retry_after: Callable[[BaseException], float | None] | None = None) -> T:
        """Call ``function``; retry it while it raises transient errors and retries remain.

        Args:
            function: The call to make.
            is_transient: True for errors worth retrying (429, 5xx, timeouts).
            on_retry: Called as ``on_retry(attempt, error, delay_s)`` before each wait.
            retry_after: The wait the server asked for with an error (seconds), or None; the
                wait is then ``max(backoff, min(asked, max_retry_after_s))``.

        Returns:
            ``function()``'s result.

        Raises:
            The original error if it is not transient; :class:`RetriesExhaustedError` (chained to
            the last error) if it still fails after ``max_retries`` retries.
        """
        attempt = 0
        while True:
            try:
                return function()
            except Exception as error:
                if not is_transient(error):
                    raise
                if attempt >= self.max_retries:
                    raise RetriesExhaustedError(
                        f"gave up after {attempt + 1} attempts; last error: "
                        f"{type(error).__name__}. Raise max_retries or timeout, lower "
                        "concurrency, or check the server"
                    ) from error
                wait = self.delay(attempt)  # drawn even when the server decides: same draws, same seed
                asked = retry_after(error) if retry_after is not None else None
                if asked is not None:
                    wait = max(wait, min(asked, self.max_retry_after_s))
                if on_retry is not None:
                    on_retry(attempt, error, wait)
                self.sleep(wait)
                attempt += 1
