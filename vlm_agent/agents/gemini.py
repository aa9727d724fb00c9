"""Prompting baseline through Google's Gemini API (the official ``google-genai`` SDK).

The key comes from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``. The image goes first, as inline PNG
bytes, then the task prompt, as the paper prompted Gemini. ``base_url`` points the SDK at another
endpoint (a proxy, or a local server speaking the ``generateContent`` protocol in tests).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from vlm_agent.agents.api_keys import read_api_key
from vlm_agent.agents.remote import Completion, RemoteModelAgent

GEMINI_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


class GeminiAgent(RemoteModelAgent):
    """An agent that asks a Gemini model for each move.

    Example::

        agent = GeminiAgent("gemini-2.5-flash", cache_dir=".cache/answers")
        result = evaluate_agent(agent, "gym_cards/Blackjack-v0", episodes=100, seed=0)
    """

    provider = "gemini"

    def __init__(self, model: str, *, base_url: str | None = None, **kwargs: Any) -> None:
        from google import genai
        from google.genai import types

        api_key = read_api_key(GEMINI_KEY_VARIABLES)
        if api_key is None:
            raise ValueError(
                "gemini: no API key. Set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment; "
                "keys are read only from the environment"
            )
        super().__init__(model, base_url=base_url, api_key=api_key, **kwargs)
        # retry_options=None keeps the SDK from retrying on its own: RetryPolicy is the only loop.
        http_options = types.HttpOptions(base_url=base_url, timeout=int(self.timeout_s * 1000),
                                         retry_options=None)
        self._client = genai.Client(api_key=api_key, http_options=http_options)
        self._types = types

    def _complete(self, prompt: str, png: bytes) -> Completion:
        types = self._types
        response = self._client.models.generate_content(
            model=self.model,
            contents=[types.Content(role="user", parts=[
                types.Part.from_bytes(data=png, mime_type="image/png"),
                types.Part.from_text(text=prompt),
            ])],
            config=types.GenerateContentConfig(
                temperature=self.temperature,
                max_output_tokens=self.max_new_tokens,
                candidate_count=1,
            ),
        )
        if not response.candidates:
            feedback = response.prompt_feedback
            reason = feedback.block_reason if feedback is not None else None
            if reason is None:
                raise ValueError("the server's generateContent response has no candidates")
            # A blocked prompt is an answer, not a failure: it names no action and counts as
            # invalid, as a refusal from any other model would.
            return Completion(text="", prompt_tokens=0, completion_tokens=0)
        content = response.candidates[0].content
        parts = content.parts if content is not None and content.parts else []
        # Thinking models may return their thoughts as parts; only the answer is parsed.
        text = "".join(part.text for part in parts if part.text and not part.thought)
        usage = response.usage_metadata
        prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
        # Thinking models bill their thoughts as output tokens.
        completion_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
                             if usage else 0)
        return Completion(text=text, prompt_tokens=int(prompt_tokens),
                          completion_tokens=int(completion_tokens))

    def _is_transient(self, error: BaseException) -> bool:
        from google.genai import errors

        if isinstance(error, errors.APIError):
            return error.code == 429 or (error.code is not None and error.code >= 500)
        # Timeouts and dropped connections. Depending on its version the SDK sends through
        # httpx or its fork httpx2, whose classes are unrelated: accept either one's errors.
        transport_errors = tuple(sys.modules[name].TransportError
                                 for name in ("httpx", "httpx2") if name in sys.modules)
        return isinstance(error, transport_errors)

    def _error_headers(self, error: BaseException) -> Mapping[str, str] | None:
        from google.genai import errors

        if isinstance(error, errors.APIError) and error.response is not None:
            return error.response.headers
        return None

    def _close_client(self) -> None:
        self._client.close()
