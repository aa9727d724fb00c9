"""The agent protocol: what the loop (:mod:`vlm_agent.rollout.loop`) shows an agent at each step
(:class:`AgentInput`) and what it expects back (text, one answer per input). Our trained policy,
the prompted API models, random play and the expert all implement :class:`Agent`.

This module imports numpy only (no torch, no API client).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

# --------------------------------------------------------------------------------------------
# The agent protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentInput:
    """What an agent sees at one environment step.

    Attributes:
        image: The observation image, ``uint8`` array of shape (H, W, 3).
        prompt: The task prompt rendered by :mod:`vlm_agent.prompting` for the current state.
        legal_actions: The text actions legal now; the parsed answer must name one of them.
        expert_action: Index into ``legal_actions`` that the environment's expert would play, or
            ``None`` where the environment offers no expert. Only agents with
            ``uses_expert_action`` (the expert baseline, SFT's demonstrator) are given it.
        info: The environment's last ``info`` (the state behind the image), likewise given only to
            agents with ``uses_expert_action``: a demonstration writes its read-out from it.
    """

    image: np.ndarray
    prompt: str
    legal_actions: list[str]
    expert_action: int | None
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TokenUsage:
    """Token and request counters of an agent, cumulative since the agent was built.

    Attributes:
        prompt_tokens: Input tokens billed by the server (images included, as the server counts).
        completion_tokens: Output tokens billed by the server.
        requests: Requests that reached the server and got an answer (retries not included).
        cache_hits: Answers served from the on-disk response cache (no request, no cost).
        retries: Failed attempts that were retried (rate limits, server errors, timeouts).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                             for f in dataclasses.fields(self)})

    def __sub__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(**{f.name: getattr(self, f.name) - getattr(other, f.name)
                             for f in dataclasses.fields(self)})


@runtime_checkable
class Agent(Protocol):
    """Anything that answers task prompts with text, one answer per input.

    ``respond`` gets a batch (one input per parallel environment) and returns the raw answer
    texts in the same order; the evaluation loop parses them with the trainer's parser. Agents
    never see the environment itself, so an API model and our trained policy are judged by the
    same rules.
    """

    name: str
    """Row name in result tables, e.g. ``"openai:gpt-4o"``."""

    uses_expert_action: bool
    """True only for agents that read :attr:`AgentInput.expert_action` (the expert baseline).
    For the others the loop leaves it ``None``: the expert can cost a search per step (Points24
    from a dead-end formula)."""

    def respond(self, inputs: Sequence[AgentInput]) -> list[Any]:
        """Return one answer per input, in order: its raw text, or an object whose ``.text`` is
        (a rollout engine returns the sampled :class:`~vlm_agent.models.batching.PolicySample`)."""
        ...

    def usage(self) -> TokenUsage:
        """Return the cumulative token usage (all zeros for agents without a model server)."""
        ...

    def close(self) -> None:
        """Release threads, connections or models the agent holds."""
        ...
