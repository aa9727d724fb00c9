"""The machinery every API-backed agent shares: concurrency, retries, response cache, usage.

A subclass says how to send one (prompt, image) request to its provider
(:meth:`RemoteModelAgent._complete`) and which of its errors are transient
(:meth:`RemoteModelAgent._is_transient`); everything else lives here once:

- requests of one batch (one per parallel environment) run on a thread pool of ``concurrency``
  workers, in order of the batch;
- transient failures (429, 5xx, timeouts, dropped connections) are retried with capped,
  jittered exponential backoff, or after the server's `Retry-After` when it sends one
  (:mod:`vlm_agent.agents.retry`); the provider SDK's own retries are switched off so that
  there is one retry policy, not two multiplied;
- answers are cached on disk by (provider, model, server, prompt, image, sampling settings,
  repeat number of the question) (:mod:`vlm_agent.agents.response_cache`);
- tokens are counted from the server's usage reports;
- the API key never appears in a log line, error message, answer or cache entry
  (:mod:`vlm_agent.agents.api_keys`): answers are redacted as they arrive, error details are
  redacted before they are shortened (a cut through the key would leave its start unredacted).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlm_agent.agents.api_keys import redact
from vlm_agent.agents.response_cache import (
    CachedAnswer,
    ResponseCache,
    cache_key,
    question_digest,
)
from vlm_agent.agents.retry import RetriesExhaustedError, RetryPolicy, parse_retry_after
from vlm_agent.rollout.agent import AgentInput, TokenUsage

logger = logging.getLogger(__name__)

MAX_ERROR_DETAIL_CHARS = 500
"""Server error bodies can be long HTML pages; the error message keeps their start."""


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8`` (H, W, 3) or (H, W) image."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 arrays, got dtype {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Completion:
    """One answer from a model server and the tokens it reported."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class ModelRequestError(RuntimeError):
    """A request to a model server failed for good; the message has the (redacted) reason."""


class RemoteModelAgent:
    """Base class of agents that answer through a model server's HTTP API.

    Args:
        model: The provider's model name.
        base_url: The server; None means the provider's public endpoint.
        api_key: Sent to the server; kept out of every message.
        concurrency: Requests in flight at once.
        cache_dir: Response cache folder, or None for no cache.
        timeout_s: Per-request timeout in seconds.
        retry: Retry policy for transient failures.
        temperature: Sampling temperature.
        max_new_tokens: Answer length limit.
        name: Row name in result tables; defaults to ``"<provider>:<model>"``.
    """

    provider = "remote"
    uses_expert_action = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        concurrency: int = 4,
        cache_dir: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        temperature: float = 0.2,
        max_new_tokens: int = 256,
        name: str | None = None,
    ) -> None:
        if not model:
            raise ValueError(f"{self.provider}: the model name is empty; write e.g. "
                             f"'{self.provider}:<model-name>'")
        if concurrency <= 0:
            raise ValueError(f"concurrency must be positive, got {concurrency}")
        self.model = model
        self.name = name or f"{self.provider}:{model}"
        self.base_url = base_url
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self._retry = retry or RetryPolicy()
        self._cache = ResponseCache(cache_dir) if cache_dir else None
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix=f"{self.provider}-request")
        self._usage = TokenUsage()
        self._usage_lock = threading.Lock()
        self._draws: dict[str, int] = {}

    def __repr__(self) -> str:  # the default repr could one day include the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- what subclasses provide ------------------------------------------------------------

    def _complete(self, prompt: str, png: bytes) -> Completion:
        """Send one request and return the answer; raise the SDK's errors unchanged."""
        raise NotImplementedError

    def _is_transient(self, error: BaseException) -> bool:
        """True for errors worth retrying: rate limits, server errors, timeouts."""
        raise NotImplementedError

    def _error_headers(self, error: BaseException) -> Mapping[str, str] | None:
        """The HTTP headers of the response behind an SDK error (for `Retry-After`), if any."""
        return None

    def _close_client(self) -> None:
        """Close the SDK client's connections."""

    # -- the Agent protocol -----------------------------------------------------------------

    def sampling_settings(self) -> dict[str, Any]:
        """The settings that change the answer, part of the cache key."""
        return {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens}

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        """Answer every input, ``concurrency`` requests at a time, in input order."""
        # Draw numbers are assigned here, in batch order, not in the worker threads: a rerun must
        # number repeated questions the same way to find their cached answers.
        draws = [self._next_draw(agent_input) for agent_input in inputs]
        return list(self._pool.map(self._answer, inputs, draws))

    def _next_draw(self, agent_input: AgentInput) -> int:
        """How often this question was asked before (always 0 for greedy decoding)."""
        if self._cache is None or self.temperature == 0:
            return 0
        digest = question_digest(agent_input.prompt, agent_input.image)
        draw = self._draws.get(digest, 0)
        self._draws[digest] = draw + 1
        return draw

    def usage(self) -> TokenUsage:
        """Cumulative tokens, requests, cache hits and retries of this agent."""
        with self._usage_lock:
            return self._usage

    def close(self) -> None:
        """Stop the worker threads and close the SDK client."""
        self._pool.shutdown(wait=True)
        self._close_client()

    # -- one request ------------------------------------------------------------------------

    def _count(self, **increments: int) -> None:
        with self._usage_lock:
            self._usage = self._usage + TokenUsage(**increments)

    def _answer(self, agent_input: AgentInput, draw: int) -> str:
        key = None
        if self._cache is not None:
            key = cache_key(
                provider=self.provider, model=self.model, base_url=self.base_url or "",
                prompt=agent_input.prompt, image=agent_input.image,
                sampling=self.sampling_settings(), draw=draw,
            )
            cached = self._cache.get(key)
            if cached is not None:
                self._count(cache_hits=1)
                return redact(cached.text, [self._api_key])  # entries written before answers were redacted
        png = encode_png(agent_input.image)

        def on_retry(attempt: int, error: BaseException, delay_s: float) -> None:
            self._count(retries=1)
            logger.warning("%s: %s; retry %d/%d in %.2f s", self.name, self._describe(error),
                           attempt + 1, self._retry.max_retries, delay_s)

        try:
            completion = self._retry.call(lambda: self._complete(agent_input.prompt, png),
                                          self._is_transient, on_retry,
                                          retry_after=lambda error: parse_retry_after(self._error_headers(error)))
        except RetriesExhaustedError as error:
            # `from None`: the SDK error chained below could carry the key in its body.
            raise ModelRequestError(
                f"{self.name} at {self.base_url or 'the public endpoint'}: "
                f"{redact(str(error), [self._api_key])} ({self._describe(error.__cause__)})"
            ) from None
        except Exception as error:  # noqa: BLE001 - re-raised with a redacted message
            raise ModelRequestError(
                f"{self.name} at {self.base_url or 'the public endpoint'}: request failed and "
                f"is not retried: {self._describe(error)}. Check the model name, the API key "
                "variable and the server"
            ) from None
        # A server may echo the key in an answer as well as in an error: redact before the text
        # reaches the cache, the logs and the results.
        completion = Completion(redact(completion.text, [self._api_key]), completion.prompt_tokens,
                                completion.completion_tokens)
        self._count(requests=1, prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens)
        if self._cache is not None and key is not None:
            self._cache.put(key, CachedAnswer(completion.text, completion.prompt_tokens,
                                              completion.completion_tokens))
        return completion.text

    def _describe(self, error: BaseException | None) -> str:
        """``Type: message`` of an error, shortened and with the API key redacted."""
        if error is None:
            return "unknown error"
        # Redact first: shortening first could cut through the key and leave its start behind.
        detail = redact(str(error), [self._api_key])
        if len(detail) > MAX_ERROR_DETAIL_CHARS:
            detail = detail[:MAX_ERROR_DETAIL_CHARS] + "..."
        return f"{type(error).__name__}: {detail}"
