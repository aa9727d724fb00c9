"""The summary of one agent on one environment (:class:`EvalResult`), from its episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlm_agent.evaluation.statistics import wilson_interval
from vlm_agent.rollout.agent import TokenUsage
from vlm_agent.rollout.loop import EpisodeRecord


@dataclass(frozen=True)
class EvalResult:
    """Summary of one agent on one environment.

    Attributes:
        method: The agent's name.
        env_id: The Gymnasium id evaluated.
        cot: Whether the prompt asked for chain-of-thought.
        episodes: Episodes played.
        successes: Episodes that ended with ``info["success"]``.
        success_rate: ``successes / episodes``.
        ci95: Wilson 95% interval of the success rate, ``(low, high)``.
        mean_return: Mean episode return.
        mean_length: Mean episode length in steps.
        steps: Total environment steps.
        invalid_rate: Share of steps whose answer was unusable (no single legal action named).
        usage: Tokens and requests spent by this run (cache hits cost nothing).
        records: One :class:`EpisodeRecord` per episode, in episode order.
        show_state: Whether the prompt also gave the state as text.
        invalid_action: The rule for unusable answers, ``"random"`` or ``"penalty"``.
    """

    method: str
    env_id: str
    cot: bool
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_return: float
    mean_length: float
    steps: int
    invalid_rate: float
    usage: TokenUsage
    records: tuple[EpisodeRecord, ...] = field(repr=False)
    show_state: bool = False
    invalid_action: str = "random"

    @classmethod
    def from_records(cls, method: str, env_id: str, cot: bool, records: Sequence[EpisodeRecord],
                     usage: TokenUsage, *, show_state: bool = False,
                     invalid_action: str = "random") -> EvalResult:
        """Aggregate per-episode records into a result."""
        episodes = len(records)
        successes = sum(record.success for record in records)
        steps = sum(record.length for record in records)
        invalid = sum(record.invalid_steps for record in records)
        return cls(
            method=method,
            env_id=env_id,
            cot=cot,
            episodes=episodes,
            successes=successes,
            success_rate=successes / episodes if episodes else 0.0,
            ci95=wilson_interval(successes, episodes),
            mean_return=float(np.mean([r.episode_return for r in records])) if records else 0.0,
            mean_length=steps / episodes if episodes else 0.0,
            steps=steps,
            invalid_rate=invalid / steps if steps else 0.0,
            usage=usage,
            records=tuple(records),
            show_state=show_state,
            invalid_action=invalid_action,
        )

    def summary(self) -> dict[str, Any]:
        """Flat dictionary of the headline numbers (one CSV row), without per-episode records."""
        return {
            "method": self.method,
            "env_id": self.env_id,
            "cot": self.cot,
            "show_state": self.show_state,
            "invalid_action": self.invalid_action,
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": round(self.success_rate, 6),
            "ci95_low": round(self.ci95[0], 6),
            "ci95_high": round(self.ci95[1], 6),
            "invalid_rate": round(self.invalid_rate, 6),
            "mean_return": round(self.mean_return, 6),
            "mean_length": round(self.mean_length, 6),
            "steps": self.steps,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "requests": self.usage.requests,
            "cache_hits": self.usage.cache_hits,
            "retries": self.usage.retries,
        }
