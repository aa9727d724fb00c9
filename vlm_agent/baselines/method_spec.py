"""Turn a method spec from a command line (``"openai:gpt-4o"``, ``"random"``) into an agent.

Specs:

- ``random``: :class:`~vlm_agent.baselines.simple.RandomAgent` (seeded with the run seed).
- ``expert``: :class:`~vlm_agent.baselines.simple.ExpertAgent`.
- ``openai:MODEL``: :class:`~vlm_agent.baselines.openai_chat.OpenAIChatAgent`; ``base_url`` picks
  the server (vLLM, SGLang, Ollama, ...).
- ``gemini:MODEL``: :class:`~vlm_agent.baselines.gemini.GeminiAgent`.
- ``local:PATH``: :class:`~vlm_agent.baselines.local_hf.LocalHFAgent`, a saved
  :class:`vlm_agent.policy.VLMPolicy` (a trained checkpoint or a Hugging Face model folder).

Each kind is imported only when asked for, so ``random`` needs neither an API SDK nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vlm_agent.evaluation import Agent

METHOD_SPEC_HELP = (
    "one of: random, expert, openai:MODEL (any OpenAI-compatible server, see --base-url), "
    "gemini:MODEL, local:PATH (a saved policy or Hugging Face model folder)"
)


@dataclass(frozen=True)
class AgentOptions:
    """Settings shared by the agents that talk to a model.

    Attributes:
        base_url: Server of API methods; None means the provider's public endpoint.
        concurrency: Requests in flight at once (API methods).
        cache_dir: Response cache folder of API methods, or None.
        timeout_s: Per-request timeout in seconds (API methods).
        max_retries: Retries after 429 / 5xx / timeouts (API methods).
        retry_base_delay_s: First backoff wait in seconds, doubled per retry.
        retry_max_delay_s: Longest backoff wait in seconds.
        temperature: Sampling temperature (paper: 0.2).
        max_new_tokens: Answer length limit in tokens (paper: 256).
        seed: Seed of random players, of retry jitter and of local sampling.
    """

    base_url: str | None = None
    concurrency: int = 4
    cache_dir: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 6
    retry_base_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0
    temperature: float = 0.2
    max_new_tokens: int = 256
    seed: int = 0


def build_agent(spec: str, options: AgentOptions | None = None) -> Agent:
    """The agent a method spec names (see the module docstring); ValueError for a bad spec."""
    options = options or AgentOptions()
    kind, separator, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("random", "expert") and not separator:
        from vlm_agent.baselines.simple import ExpertAgent, RandomAgent

        return RandomAgent(seed=options.seed) if kind == "random" else ExpertAgent()
    if kind in ("openai", "gemini", "local") and argument.strip():
        argument = argument.strip()
        if kind == "local":
            from vlm_agent.baselines.local_hf import LocalHFAgent

            return LocalHFAgent.from_pretrained(
                argument, temperature=options.temperature,
                max_new_tokens=options.max_new_tokens, seed=options.seed,
            )
        from vlm_agent.baselines.retry import RetryPolicy

        retry = RetryPolicy(max_retries=options.max_retries,
                            base_delay_s=options.retry_base_delay_s,
                            max_delay_s=options.retry_max_delay_s, seed=options.seed)
        settings = {
            "base_url": options.base_url, "concurrency": options.concurrency,
            "cache_dir": options.cache_dir, "timeout_s": options.timeout_s, "retry": retry,
            "temperature": options.temperature, "max_new_tokens": options.max_new_tokens,
        }
        if kind == "openai":
            from vlm_agent.baselines.openai_chat import OpenAIChatAgent

            return OpenAIChatAgent(argument, **settings)
        from vlm_agent.baselines.gemini import GeminiAgent

        return GeminiAgent(argument, **settings)
    raise ValueError(f"unknown method {spec!r}: use {METHOD_SPEC_HELP}")
