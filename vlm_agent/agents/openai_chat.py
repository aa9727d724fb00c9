"""Prompting baseline through any OpenAI-compatible chat-completions server.

Works with OpenAI itself (``OPENAI_API_KEY``) and with any server that speaks the same protocol:
vLLM (``vllm serve MODEL`` -> ``--base-url http://localhost:8000/v1``), SGLang, Ollama
(``http://localhost:11434/v1``), LM Studio, llama.cpp's server. The image goes in the user message
as a base64 PNG data URL, before the task prompt, as the paper prompted GPT-4V.

The answer length limit is sent as ``max_tokens``, which every compatible server understands;
OpenAI's reasoning models (o-series), which want ``max_completion_tokens`` and a fixed
temperature, are not the target of this baseline.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from vlm_agent.agents.api_keys import read_api_key
from vlm_agent.agents.remote import Completion, RemoteModelAgent

logger = logging.getLogger(__name__)

OPENAI_KEY_VARIABLES = ("OPENAI_API_KEY",)
LOCAL_SERVER_PLACEHOLDER_KEY = "EMPTY"
"""Sent to self-hosted servers when no key is set; the SDK refuses an empty key, vLLM ignores it."""


def chat_messages(prompt: str, png: bytes) -> list[dict[str, Any]]:
    """The chat-completions ``messages``: one user turn with the image (data URL) and the prompt."""
    data_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return [{
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": prompt},
        ],
    }]


def message_text(content: Any) -> tuple[str, str | None]:
    """The answer text of a chat message's ``content``, and why it is unusable (None if usable).

    ``content`` is text, None (no answer), or a list of content parts (``{"type": "text",
    "text": ...}``, as some servers answer); the text parts are joined in order and other parts
    (images, audio, refusals) are left out. Anything else (a number, a mapping) is no answer: the
    text is empty, which the parser counts as invalid, and the reason is returned for the log.
    """
    if content is None or isinstance(content, str):
        return content or "", None
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
        if texts or not content:
            return "".join(texts), None
        return "", f"the message content is a list of {len(content)} parts without text"
    return "", f"the message content is {type(content).__name__} {str(content)[:40]!r}, not text"


class OpenAIChatAgent(RemoteModelAgent):
    """An agent that asks a chat-completions model for each move.

    The key comes from ``OPENAI_API_KEY``. It is required for the public endpoint; a custom
    ``base_url`` without a key set gets a placeholder key (self-hosted servers usually need none).

    Example::

        agent = OpenAIChatAgent("Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://localhost:8000/v1",
                                cache_dir=".cache/answers")
        result = evaluate_agent(agent, "gym_cards/NumberLine-v0", episodes=100, seed=0)
    """

    provider = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, **kwargs: Any) -> None:
        import openai

        api_key = read_api_key(OPENAI_KEY_VARIABLES)
        if api_key is None:
            if base_url is None:
                raise ValueError(
                    "openai: no API key. Set the OPENAI_API_KEY environment variable (keys are "
                    "read only from the environment), or pass --base-url for a self-hosted "
                    "OpenAI-compatible server"
                )
            api_key = LOCAL_SERVER_PLACEHOLDER_KEY
        super().__init__(model, base_url=base_url, api_key=api_key, **kwargs)
        # max_retries=0: our RetryPolicy is the only retry loop.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=self.timeout_s,
                                     max_retries=0)

    def _complete(self, prompt: str, png: bytes) -> Completion:
        response = self._client.chat.completions.create(
            model=self.model,
            messages=chat_messages(prompt, png),
            temperature=self.temperature,
            max_tokens=self.max_new_tokens,
            n=1,
        )
        if not response.choices:
            raise ValueError("the server's chat-completions response has no choices")
        text, problem = message_text(response.choices[0].message.content)
        if problem is not None:
            logger.warning("%s: unusable answer (%s); counted as an invalid answer", self.name, problem)
        usage = response.usage
        return Completion(
            text=text,
            prompt_tokens=int(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=int(usage.completion_tokens or 0) if usage else 0,
        )

    def _is_transient(self, error: BaseException) -> bool:
        import openai

        if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
            return True
        if isinstance(error, openai.APIStatusError):
            return error.status_code == 429 or error.status_code >= 500
        return False

    def _error_headers(self, error: BaseException) -> Mapping[str, str] | None:
        import openai

        return error.response.headers if isinstance(error, openai.APIStatusError) else None

    def _close_client(self) -> None:
        self._client.close()
