"""The critic-free algorithms' formulas against hand-computed groups (vlm_agent.algorithms.group)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vlm_agent.algorithms.base import MiniBatchScores
from vlm_agent.algorithms.group import (
    GRPO,
    RLOO,
    GiGPO,
    anchor_ids,
    anchor_share,
    informative_share,
    discounted_returns,
    episode_mean_weights,
    gigpo_advantages,
    grpo_advantages,
    rloo_advantages,
    step_advantages,
)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_grpo_normalises_within_each_group() -> None:
    # Group 0: returns 1, 0, 0, 1 -> mean 0.5, sample std sqrt(1/3); group 1: 10, 0 -> mean 5, std sqrt(50).
    advantages = grpo_advantages(t([1, 0, 0, 1, 10, 0]), t([0, 0, 0, 0, 1, 1], torch.long))
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    b = 5 / (math.sqrt(50) + 1e-6)
    assert advantages.tolist() == pytest.approx([a, -a, -a, a, b, -b], abs=1e-12)


def test_dr_grpo_only_centres() -> None:
    advantages = grpo_advantages(t([1, 0, 0, 1, 10, 0]), t([0, 0, 0, 0, 1, 1], torch.long), scale_by_std=False)
    assert advantages.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 5, -5])


def test_a_group_of_one_and_equal_returns_give_zero() -> None:
    advantages = grpo_advantages(t([3, 2, 2, 2]), t([0, 1, 1, 1], torch.long))
    assert advantages.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert rloo_advantages(t([3, 2, 2, 2]), t([0, 1, 1, 1], torch.long)).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_rloo_subtracts_the_mean_of_the_others() -> None:
    advantages = rloo_advantages(t([3, 1, 2, 7, 5]), t([0, 0, 0, 1, 1], torch.long))
    # 3 - (1+2)/2, 1 - (3+2)/2, 2 - (3+1)/2; 7 - 5, 5 - 7.
    assert advantages.tolist() == pytest.approx([1.5, -1.5, 0.0, 2.0, -2.0])


def test_discounted_returns_follow_each_trajectory_in_step_order() -> None:
    # Trajectory 0: rewards 0, 0, 1 (given out of order); trajectory 1: -1, 2 (a truncated episode: no bootstrap).
    rewards = t([1, 0, -1, 0, 2])
    trajectory = t([0, 0, 1, 0, 1], torch.long)
    step = t([2, 0, 0, 1, 1], torch.long)
    returns = discounted_returns(rewards, trajectory, step, gamma=0.5)
    assert returns.tolist() == pytest.approx([1.0, 0.25, -1 + 0.5 * 2, 0.5, 2.0])


def test_an_anchor_state_met_twice_in_one_trajectory_counts_twice() -> None:
    # One group, two trajectories. State "a" occurs at steps 0 and 2 of trajectory 0 and step 0 of trajectory 1.
    keys = ["a", "b", "a", "a", "c"]
    group = t([0, 0, 0, 0, 0], torch.long)
    anchors = anchor_ids(group, keys)
    assert anchors.tolist() == [0, 1, 0, 0, 2]
    step_returns = t([3.0, 1.0, 2.0, 4.0, 0.0])
    advantages = step_advantages(step_returns, anchors, scale_by_std=False)
    assert advantages.tolist() == pytest.approx([0.0, 0.0, -1.0, 1.0, 0.0])  # "a": mean 3
    assert anchor_share(group, keys) == pytest.approx(3 / 5)


def test_the_same_state_in_two_groups_is_two_anchors() -> None:
    anchors = anchor_ids(t([0, 1], torch.long), ["a", "a"])
    assert anchors.tolist() == [0, 1]
    assert anchor_share(t([0, 1], torch.long), ["a", "a"]) == 0.0


def test_informative_share_counts_the_steps_of_groups_whose_returns_differ() -> None:
    # Group 0: episodes 0 (2 steps, return 1) and 1 (1 step, return 1): equal returns.
    # Group 1: episodes 2 (1 step, return 1) and 3 (2 steps, return -1): they differ.
    # Group 2: one episode of 1 step: a group of one teaches nothing.
    rewards = t([0.0, 1.0, 1.0, 1.0, -1.0, 0.0, 1.0])
    group = t([0, 0, 0, 1, 1, 1, 2], torch.long)
    trajectory = t([0, 0, 1, 2, 3, 3, 4], torch.long)
    assert informative_share(rewards, group, trajectory) == pytest.approx(3 / 7)
    assert informative_share(t([]), t([], torch.long), t([], torch.long)) == 0.0


def test_gigpo_adds_omega_times_the_step_advantage() -> None:
    assert gigpo_advantages(t([1.0, -1.0]), t([0.5, 2.0]), omega=0.5).tolist() == [1.25, 0.0]


def rollout(rewards, group, trajectory, step, keys):
    return SimpleNamespace(rewards=t(rewards), group=t(group, torch.long), trajectory=t(trajectory, torch.long),
                           step=t(step, torch.long), state_keys=keys)


def test_algorithms_spread_the_episode_advantage_over_its_steps() -> None:
    # One group of two episodes from the same state "s": episode 0 (2 steps) wins 1, episode 1 (1 step) gets -1.
    batch = rollout([0, 1, -1], [0, 0, 0], [0, 0, 1], [0, 1, 0], ["s", "x", "s"])
    grpo = GRPO().advantages(batch).advantages
    a = 1 / (math.sqrt(2) + 1e-6)  # returns 1, -1: mean 0, sample std sqrt(2)
    assert grpo.tolist() == pytest.approx([a, a, -a])
    assert RLOO().advantages(batch).advantages.tolist() == pytest.approx([2.0, 2.0, -2.0])
    assert GRPO(scale_by_std=False).advantages(batch).advantages.tolist() == pytest.approx([1.0, 1.0, -1.0])
    # GiGPO: step returns (gamma 0.5) 0.5, 1, -1; anchor "s" holds 0.5 and -1 -> +-0.75 / (std(0.5, -1) + eps).
    gigpo = GiGPO(gamma=0.5, omega=1.0).advantages(batch).advantages
    s = 0.75 / (math.sqrt(((0.75**2) * 2) / 1) + 1e-6)
    assert gigpo.tolist() == pytest.approx([a + s, a, -a - s])
    assert GRPO().advantages(batch).returns is None


def test_episode_weights_make_every_episode_count_alike() -> None:
    # Episodes of 3, 1 and 2 steps (6 steps, mean length 2): weights 2/3, 2 and 1; each episode sums to 2.
    weights = episode_mean_weights(t([5, 5, 7, 5, 9, 9], torch.long))
    assert weights.tolist() == pytest.approx([2 / 3, 2 / 3, 2, 2 / 3, 1, 1])
    assert weights.sum().item() == pytest.approx(6)


def test_episode_aggregation_balances_a_long_failure_against_a_short_win() -> None:
    # One group: a win in 1 step (return 1) and a failure in 3 steps (return -1). Per step, the failure
    # outweighs the win 3 to 1; weighted per episode, both sum to the same magnitude.
    batch = rollout([1, -1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 1, 2], ["s", "s", "x", "y"])
    for algorithm in (GRPO, RLOO, GiGPO):
        per_step = algorithm().advantages(batch).advantages
        per_episode = algorithm(loss_aggregation="episode").advantages(batch).advantages
        assert per_episode.tolist() == pytest.approx((per_step * t([2, 2 / 3, 2 / 3, 2 / 3])).tolist())
    a = GRPO(loss_aggregation="episode").advantages(batch).advantages
    assert a[0].item() == pytest.approx(-a[1:].sum().item())
    assert GRPO().advantages(batch).advantages.sum().item() < 0
    with pytest.raises(ValueError, match="loss_aggregation"):
        GRPO(loss_aggregation="token").advantages(batch)


def test_the_loss_has_ratio_one_and_the_surrogate_at_zero_change() -> None:
    log_probs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    scores = MiniBatchScores(log_probs=log_probs, old_log_probs=log_probs.detach().clone(),
                             advantages=torch.tensor([1.0, -1.0, 0.5]), entropy=torch.zeros(3))
    loss, stats = GRPO(clip_range=0.2).loss(scores)
    assert stats["losses/ratio"] == 1.0 and stats["losses/clip_fraction"] == 0.0
    assert loss.item() == pytest.approx(-(1.0 - 1.0 + 0.5) / 3)
    (gradient,) = torch.autograd.grad(loss, log_probs)
    assert gradient.tolist() == pytest.approx([-1 / 3, 1 / 3, -0.5 / 3])
