"""The interface every RL algorithm implements: advantages from a rollout, a loss from scores.

The trainer (:mod:`vlm_agent.training.ppo_trainer`) is generic: it collects a rollout, asks the
algorithm for per-sample advantages (and value targets, for algorithms with a critic), then runs
epochs of mini-batches in which the algorithm turns the policy's new scores into a loss. It never
branches on the algorithm beyond :attr:`Algorithm.needs_critic`. A new method (GRPO, RLOO, GiGPO)
is a sibling module with its formulas as pure functions, plus a class implementing this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class RolloutTensors(Protocol):
    """What an algorithm reads of a rollout: ``[T, N]`` tensors (T steps of N environments)."""

    rewards: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


@dataclass
class Advantages:
    """Per-sample targets of one update, flattened in ``[T, N]`` row-major order (``reshape(-1)``).

    Attributes:
        advantages: ``[T*N]`` the advantage of each sampled answer.
        returns: ``[T*N]`` the value target of each sample (None for critic-free algorithms).
    """

    advantages: torch.Tensor
    returns: torch.Tensor | None


@dataclass
class MiniBatchScores:
    """A mini-batch's scores under the current policy and at sampling time (``[B]`` each).

    Attributes:
        log_probs: CoT-scaled log-probs now, with gradients.
        old_log_probs: CoT-scaled log-probs when sampled.
        advantages: From :meth:`Algorithm.advantages`.
        entropy: Mean per-token entropy of each answer.
        values: Value-head outputs now (algorithms with a critic).
        old_values: Value estimates when sampled.
        returns: Value targets.
        ref_log_probs: Log-probs of the reference policy (for a KL term), or None.
    """

    log_probs: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None


class Algorithm(Protocol):
    """An RL algorithm as the trainer sees it."""

    needs_critic: bool
    """True when the loss trains a value head (PPO); critic-free algorithms build none."""

    def advantages(self, rollout: RolloutTensors) -> Advantages:
        """Per-sample advantages (and value targets) of one rollout."""
        ...

    def loss(self, scores: MiniBatchScores) -> tuple[torch.Tensor, dict[str, float]]:
        """The mini-batch loss to minimise and its statistics (``losses/...`` metric names)."""
        ...
