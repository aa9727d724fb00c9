"""Group-relative and step-level RL without a critic: GRPO, Dr. GRPO, RLOO and GiGPO.

A *group* is G episodes that start from the same initial state (the same reset seed, so the same
deal or game). Each sample is one environment step of one episode; the advantage of a step comes
from how its episode (and, for GiGPO, its state) compares with the rest of its group. No value head
is trained. The loss is PPO's clipped surrogate on the CoT-scaled log-probability of each answer
(:func:`vlm_agent.algorithms.ppo.clipped_policy_loss`), with an optional KL term to the reference
policy.

Shapes: every tensor is ``[M]``, one entry per sample (environment step) of the rollout; ``group``
and ``trajectory`` are integer ids, ``step`` the step's index within its episode.

References: Shao et al. 2024 (GRPO, DeepSeekMath, arXiv 2402.03300); Liu et al. 2025 (Dr. GRPO,
"Understanding R1-Zero-Like Training", arXiv 2503.20783); Ahmadian et al. 2024 (RLOO, "Back to
Basics", arXiv 2402.14740); Feng et al. 2025 (GiGPO, "Group-in-Group Policy Optimization for LLM
Agent Training", arXiv 2505.10978).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from vlm_agent.algorithms import LOSS_AGGREGATIONS
from vlm_agent.algorithms.base import Advantages, MiniBatchScores
from vlm_agent.algorithms.ppo import surrogate_terms

GROUP_STD_EPS = 1e-6
"""Added to a group's standard deviation before dividing (all-equal returns give advantage 0)."""


def _group_index(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense indices 0..K-1 of integer ids, and K."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    return inverse, len(unique)


def group_mean_std(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per entry: its group's mean, its group's sample standard deviation (Bessel-corrected; 0 for a
    group of one) and its group's size."""
    index, count = _group_index(ids)
    values = values.double()
    sizes = torch.zeros(count, dtype=torch.float64).index_add_(0, index, torch.ones_like(values))
    sums = torch.zeros(count, dtype=torch.float64).index_add_(0, index, values)
    means = sums / sizes
    squares = torch.zeros(count, dtype=torch.float64).index_add_(0, index, (values - means[index]) ** 2)
    stds = torch.where(sizes > 1, (squares / (sizes - 1).clamp(min=1)).sqrt(), torch.zeros_like(sizes))
    return means[index], stds[index], sizes[index]


def grpo_advantages(returns: torch.Tensor, group: torch.Tensor, *, scale_by_std: bool = True,
                    eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2).

    ``A_i = (R_i - mean(R_group)) / (std(R_group) + eps)`` for episode ``i`` with return ``R_i``;
    ``scale_by_std=False`` is Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): ``A_i = R_i - mean``.
    ``std`` is the group's sample standard deviation. A group of one, or of equal returns, gives 0.

    Args:
        returns: ``[E]`` episode returns.
        group: ``[E]`` group id of each episode.
    """
    mean, std, size = group_mean_std(returns, group)
    centred = returns.double() - mean
    if scale_by_std:
        centred = centred / (std + eps)
    return torch.where(size > 1, centred, torch.zeros_like(centred))


def rloo_advantages(returns: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """RLOO's leave-one-out advantage (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 5).

    ``A_i = R_i - mean_{j != i} R_j = G / (G - 1) * (R_i - mean(R_group))`` over a group of G
    episodes; a group of one has no baseline and gives 0.
    """
    mean, _, size = group_mean_std(returns, group)
    scale = torch.where(size > 1, size / (size - 1).clamp(min=1), torch.zeros_like(size))
    return scale * (returns.double() - mean)


def discounted_returns(rewards: torch.Tensor, trajectory: torch.Tensor, step: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """``R_t = sum_k gamma^k r_{t+k}`` within each trajectory (GiGPO's step return, Feng et al. 2025, Eq. 6).

    Entries may come in any order; ``step`` orders them within their ``trajectory``. The sum runs to
    the trajectory's last recorded step (a truncated episode adds no bootstrap).
    """
    out = torch.zeros(len(rewards), dtype=torch.float64)
    for trajectory_id in torch.unique(trajectory).tolist():
        positions = (trajectory == trajectory_id).nonzero().flatten()
        ordered = positions[torch.argsort(step[positions])]
        running = 0.0
        for position in reversed(ordered.tolist()):
            running = float(rewards[position]) + gamma * running
            out[position] = running
    return out


def step_advantages(step_returns: torch.Tensor, anchor: torch.Tensor, *, scale_by_std: bool = True,
                    eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """GiGPO's step-level advantage (Feng et al. 2025, arXiv 2505.10978, Eq. 7).

    Steps that share an *anchor state* (the same environment state within one group, matched
    exactly, ``anchor`` its id; a state met twice in one trajectory counts twice) form a step group;
    ``A^S = (R_t - mean(R_anchor)) / (std(R_anchor) + eps)``. A state met once gives 0.
    """
    return grpo_advantages(step_returns, anchor, scale_by_std=scale_by_std, eps=eps)


def gigpo_advantages(episode_advantages: torch.Tensor, step_level: torch.Tensor, omega: float) -> torch.Tensor:
    """GiGPO's combined advantage (Feng et al. 2025, Eq. 8): ``A = A^E + omega * A^S`` per step."""
    return episode_advantages.double() + omega * step_level.double()


def anchor_ids(group: torch.Tensor, state_keys: Sequence[str]) -> torch.Tensor:
    """An integer id per (group, exact state key): the anchor groups of :func:`step_advantages`."""
    table: dict[tuple[int, str], int] = {}
    return torch.tensor([table.setdefault((int(g), key), len(table)) for g, key in zip(group.tolist(), state_keys)])


def episode_returns_per_step(rewards: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """Each step's episode return: the sum of its trajectory's rewards."""
    index, count = _group_index(trajectory)
    totals = torch.zeros(count, dtype=torch.float64).index_add_(0, index, rewards.double())
    return totals[index]


def episode_mean_weights(trajectory: torch.Tensor) -> torch.Tensor:
    """Per step, ``mean_len / len(its episode)``: the weight that makes every episode count alike.

    GRPO's objective averages each output's tokens before averaging over the group
    (Shao et al. 2024, arXiv 2402.03300, Eq. 3: ``1/G sum_i 1/|o_i| sum_t``). In a multi-step episode
    the output is the episode, so a step of episode ``i`` weighs ``1 / T_i``; scaled by the mean
    length ``mean_len`` the weights sum to the number of steps (the loss keeps its scale). A step
    mean instead lets long episodes, usually the failed ones, dominate the update; Liu et al. 2025
    (Dr. GRPO, arXiv 2503.20783) argue the opposite bias for single answers. The loss is linear in
    the advantage and its clipping reads only its sign, so weighting the advantage weighs the loss.
    """
    index, count = _group_index(trajectory)
    lengths = torch.zeros(count, dtype=torch.float64).index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    return (len(index) / count) / lengths[index]


def aggregate(advantages: torch.Tensor, trajectory: torch.Tensor, loss_aggregation: str) -> torch.Tensor:
    """``advantages`` weighted for ``loss_aggregation``: ``"step"`` unchanged, ``"episode"`` times
    :func:`episode_mean_weights`."""
    if loss_aggregation == "step":
        return advantages
    if loss_aggregation == "episode":
        return advantages * episode_mean_weights(trajectory)
    raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {loss_aggregation!r}")


class GroupRolloutTensors(Protocol):
    """What a group-relative algorithm reads of a rollout: ``[M]`` per-step entries."""

    rewards: torch.Tensor
    group: torch.Tensor
    trajectory: torch.Tensor
    step: torch.Tensor
    state_keys: list[str]


def _per_episode(rollout: GroupRolloutTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(episode returns ``[E]``, their group ids ``[E]``, each step's episode index ``[M]``)."""
    return _episodes(rollout.rewards, rollout.group, rollout.trajectory)


def _episodes(rewards: torch.Tensor, group: torch.Tensor,
              trajectory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_per_episode` from the ``[M]`` tensors themselves."""
    index, count = _group_index(trajectory)
    returns = torch.zeros(count, dtype=torch.float64).index_add_(0, index, rewards.double())
    groups = torch.zeros(count, dtype=torch.long).index_copy_(0, index, group.long())
    return returns, groups, index


@dataclass
class GroupRelative:
    """The shared loss of the critic-free algorithms: the clipped surrogate on each step's advantage,
    minus ``ent_coef`` times the entropy, plus ``kl_coef`` times the KL to the reference policy."""

    clip_range: float = 0.2
    ent_coef: float = 0.0
    kl_coef: float = 0.0
    loss_aggregation: str = "step"
    needs_critic: bool = False

    def loss(self, scores: MiniBatchScores) -> tuple[torch.Tensor, dict[str, float]]:
        policy_loss, kl, stats = surrogate_terms(scores, self.clip_range, self.kl_coef)
        entropy = scores.entropy.mean()
        loss = policy_loss - self.ent_coef * entropy
        if self.kl_coef > 0:
            loss = loss + self.kl_coef * kl
        return loss, {**stats, "losses/entropy": float(entropy.detach())}


@dataclass
class GRPO(GroupRelative):
    """GRPO (``scale_by_std=True``) or Dr. GRPO (``False``): every step of episode i gets ``A_i``
    (:func:`grpo_advantages`). Our loss sums each answer's token log-probs (one sample per answer),
    so there is no per-length normalisation for Dr. GRPO to drop."""

    scale_by_std: bool = True

    def advantages(self, rollout: GroupRolloutTensors) -> Advantages:
        returns, groups, index = _per_episode(rollout)
        advantages = grpo_advantages(returns, groups, scale_by_std=self.scale_by_std)[index]
        return Advantages(aggregate(advantages, rollout.trajectory, self.loss_aggregation), None)


@dataclass
class RLOO(GroupRelative):
    """RLOO: every step of episode i gets the leave-one-out advantage ``A_i`` (:func:`rloo_advantages`)."""

    def advantages(self, rollout: GroupRolloutTensors) -> Advantages:
        returns, groups, index = _per_episode(rollout)
        advantages = rloo_advantages(returns, groups)[index]
        return Advantages(aggregate(advantages, rollout.trajectory, self.loss_aggregation), None)


@dataclass
class GiGPO(GroupRelative):
    """GiGPO: the episode-level GRPO advantage plus ``omega`` times the step-level advantage over
    anchor states (:func:`gigpo_advantages`), step returns discounted by ``gamma`` (paper: 0.95)."""

    gamma: float = 0.95
    omega: float = 1.0
    scale_by_std: bool = True

    def advantages(self, rollout: GroupRolloutTensors) -> Advantages:
        returns, groups, index = _per_episode(rollout)
        episode_level = grpo_advantages(returns, groups, scale_by_std=self.scale_by_std)[index]
        step_returns = discounted_returns(rollout.rewards, rollout.trajectory, rollout.step, self.gamma)
        anchors = anchor_ids(rollout.group, rollout.state_keys)
        step_level = step_advantages(step_returns, anchors, scale_by_std=self.scale_by_std)
        advantages = gigpo_advantages(episode_level, step_level, self.omega)
        return Advantages(aggregate(advantages, rollout.trajectory, self.loss_aggregation), None)


def anchor_share(group: torch.Tensor, state_keys: Sequence[str]) -> float:
    """The share of steps whose anchor state occurs more than once in its group (GiGPO's step groups
    larger than one: the steps that get a step-level signal)."""
    if len(state_keys) == 0:
        return 0.0
    anchors = anchor_ids(group, state_keys)
    _, _, size = group_mean_std(torch.zeros(len(anchors)), anchors)
    return float((size > 1).double().mean())


def informative_share(rewards: torch.Tensor, group: torch.Tensor, trajectory: torch.Tensor) -> float:
    """The share of steps whose group's episode returns are not all equal: the steps that get a
    non-zero episode-level advantage from GRPO or RLOO. A group whose G episodes all return the
    same (likely when sampling is near-greedy) teaches them nothing; DAPO (Yu et al. 2025, arXiv
    2503.14476, "dynamic sampling") drops such groups for that reason."""
    if len(rewards) == 0:
        return 0.0
    returns, groups, index = _episodes(rewards, group, trajectory)
    _, std, _ = group_mean_std(returns, groups)
    return float((std[index] > 0).double().mean())
