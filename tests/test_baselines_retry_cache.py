"""Backoff schedule, retry loop, response cache and key redaction, as pure pieces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlm_agent.agents.api_keys import REDACTED, read_api_key, redact
from vlm_agent.agents.response_cache import CachedAnswer, ResponseCache, cache_key, image_digest
from vlm_agent.agents.retry import RetriesExhaustedError, RetryPolicy, backoff_delay


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter", "draw", "expected"),
    [
        (0, 1.0, 60.0, 0.0, 0.3, 1.0),     # no jitter: base * 2**0
        (3, 1.0, 60.0, 0.0, 0.9, 8.0),     # base * 2**3
        (10, 1.0, 60.0, 0.0, 0.0, 60.0),   # 1024 capped at 60
        (2, 0.5, 60.0, 0.5, 0.0, 1.0),     # 2.0 * (1 - 0.5 + 0) = 1.0
        (2, 0.5, 60.0, 0.5, 0.5, 1.5),     # 2.0 * (0.5 + 0.25)
        (2, 0.5, 60.0, 1.0, 0.25, 0.5),    # full jitter: 2.0 * 0.25
        (5000, 1.0, 30.0, 0.0, 0.0, 30.0),  # huge attempt numbers do not overflow
    ],
)
def test_backoff_delay_matches_the_formula(attempt: int, base: float, cap: float, jitter: float,
                                           draw: float, expected: float) -> None:
    assert backoff_delay(attempt, base, cap, jitter, draw) == pytest.approx(expected)


def test_backoff_delay_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(0, 1.0, 2.0, 1.5, 0.0)
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 1.0, 2.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="unit_draw"):
        backoff_delay(0, 1.0, 2.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "ok"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_retry_policy_retries_transient_errors_with_seeded_capped_waits() -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_retries=5, base_delay_s=1.0, max_delay_s=3.0, jitter=0.5, seed=1,
                         sleep=waits.append)
    flaky = Flaky(4, TimeoutError("slow"))
    retried: list[int] = []
    assert policy.call(flaky, lambda error: isinstance(error, TimeoutError),
                       lambda attempt, error, delay: retried.append(attempt)) == "ok"
    assert flaky.calls == 5 and retried == [0, 1, 2, 3]
    again: list[float] = []
    twin = RetryPolicy(max_retries=5, base_delay_s=1.0, max_delay_s=3.0, jitter=0.5, seed=1,
                       sleep=again.append)
    twin.call(Flaky(4, TimeoutError("slow")), lambda error: True)
    assert waits == again  # same seed, same jitter
    caps = [1.0, 2.0, 3.0, 3.0]
    for wait, cap in zip(waits, caps):
        assert cap / 2 <= wait <= cap


def test_retry_policy_gives_up_and_does_not_retry_permanent_errors() -> None:
    policy = RetryPolicy(max_retries=2, sleep=lambda seconds: None)
    flaky = Flaky(10, ConnectionError("down"))
    with pytest.raises(RetriesExhaustedError, match="gave up after 3 attempts") as raised:
        policy.call(flaky, lambda error: True)
    assert flaky.calls == 3
    assert isinstance(raised.value.__cause__, ConnectionError)
    permanent = Flaky(1, KeyError("bad request"))
    with pytest.raises(KeyError):
        policy.call(permanent, lambda error: not isinstance(error, KeyError))
    assert permanent.calls == 1


def _image(value: int = 0, dtype: type = np.uint8) -> np.ndarray:
    return np.full((4, 5, 3), value, dtype=dtype)


def test_cache_key_changes_with_everything_that_changes_the_answer() -> None:
    base = {"provider": "openai", "model": "m", "base_url": "u", "prompt": "p",
            "image": _image(), "sampling": {"temperature": 0.2, "max_new_tokens": 8}}
    key = cache_key(**base)
    assert key == cache_key(**base)  # deterministic
    variants = [
        {"provider": "gemini"}, {"model": "m2"}, {"base_url": "v"}, {"prompt": "p2"},
        {"image": _image(1)}, {"image": np.zeros((5, 4, 3), np.uint8)},
        {"sampling": {"temperature": 0.3, "max_new_tokens": 8}}, {"draw": 1},
    ]
    keys = {cache_key(**{**base, **variant}) for variant in variants}
    assert len(keys) == len(variants) and key not in keys
    assert image_digest(_image(0)) != image_digest(_image(0, np.int16))


def test_response_cache_round_trip_atomic_and_corrupt_entries(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    assert cache.get(key) is None
    cache.put(key, CachedAnswer('{"action": "+"}', 12, 3))
    assert cache.get(key) == CachedAnswer('{"action": "+"}', 12, 3)
    assert len(cache) == 1
    assert [p.name for p in (tmp_path / "cache" / "ab").iterdir()] == [f"{key}.json"]

    path = tmp_path / "cache" / "ab" / f"{key}.json"
    for corrupt in ("", "{not json", json.dumps({"text": 5, "prompt_tokens": 1}),
                    json.dumps({"key": "other", "text": "x", "prompt_tokens": 1,
                                "completion_tokens": 1})):
        path.write_text(corrupt, encoding="utf-8")
        with pytest.warns(RuntimeWarning, match="ignoring corrupt response-cache entry"):
            assert cache.get(key) is None


def test_keys_come_from_the_environment_and_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRST_KEY", raising=False)
    monkeypatch.setenv("SECOND_KEY", "  secret-value-123  ")
    assert read_api_key(["FIRST_KEY", "SECOND_KEY"]) == "secret-value-123"
    monkeypatch.setenv("FIRST_KEY", "")
    assert read_api_key(["FIRST_KEY"]) is None
    assert redact("got secret-value-123 twice: secret-value-123", ["secret-value-123"]) == (
        f"got {REDACTED} twice: {REDACTED}")
    assert redact("EMPTY stays", ["x", None, ""]) == "EMPTY stays"


def test_parse_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    import email.utils

    import httpx

    from vlm_agent.agents.retry import parse_retry_after

    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"}), now) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now) == pytest.approx(7.0)
    assert parse_retry_after(httpx.Headers({"Retry-After": email.utils.formatdate(now - 60, usegmt=True)}), now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "3", "retry-after-ms": "250"}), now) == 0.25
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "-5", "retry-after-ms": "nan"}), now) is None
    assert parse_retry_after(httpx.Headers({}), now) is None and parse_retry_after(None) is None


def test_retry_after_raises_the_wait_up_to_its_cap_and_keeps_the_draws() -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, base_delay_s=1.0, max_delay_s=8.0, max_retry_after_s=5.0, jitter=0.5,
                         seed=2, sleep=waits.append)
    asked = iter([0.1, 4.0, 999.0])
    failures = iter([ConnectionError(), ConnectionError(), ConnectionError()])

    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert policy.call(flaky, lambda error: True, retry_after=lambda error: next(asked)) == "ok"
    schedule = RetryPolicy(max_retries=3, base_delay_s=1.0, max_delay_s=8.0, jitter=0.5, seed=2)
    backoff = [schedule.delay(attempt) for attempt in range(3)]
    assert waits == [backoff[0], max(backoff[1], 4.0), max(backoff[2], 5.0)]
