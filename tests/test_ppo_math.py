"""PPO arithmetic against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vlm_agent.algorithms.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    cosine_learning_rate,
    explained_variance,
    kl_to_reference,
    normalize_advantages,
    scheduled_learning_rate,
)


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def gae_case(terminated_at_1: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # Episode A = steps 0-1 (ends at step 1), episode B starts at step 2.
    rewards = column(1.0, 0.0, 2.0)
    values = column(0.5, 0.5, 1.5)
    # next_values[1] is the value of episode A's final observation; next_values[2] the bootstrap.
    next_values = column(0.5, 2.0, 3.0)
    terminated = column(0, 1 if terminated_at_1 else 0, 0)
    truncated = column(0, 0 if terminated_at_1 else 1, 0)
    return compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.5, gae_lambda=0.5)


def test_gae_truncated_episode_bootstraps_from_final_observation() -> None:
    advantages, returns = gae_case(terminated_at_1=False)
    # step 2: delta = 2 + 0.5*3 - 1.5 = 2.0 -> A = 2.0
    # step 1 (truncated): delta = 0 + 0.5*2.0 - 0.5 = 0.5; no credit from step 2 -> A = 0.5
    # step 0: delta = 1 + 0.5*0.5 - 0.5 = 0.75; A = 0.75 + 0.25*0.5 = 0.875
    assert advantages.squeeze(1).tolist() == pytest.approx([0.875, 0.5, 2.0])
    assert returns.squeeze(1).tolist() == pytest.approx([1.375, 1.0, 3.5])


def test_gae_terminated_episode_has_no_future_value() -> None:
    advantages, returns = gae_case(terminated_at_1=True)
    # step 1 (terminated): delta = 0 + 0 - 0.5 = -0.5 -> A = -0.5
    # step 0: A = 0.75 + 0.25*(-0.5) = 0.625
    assert advantages.squeeze(1).tolist() == pytest.approx([0.625, -0.5, 2.0])
    assert returns.squeeze(1).tolist() == pytest.approx([1.125, 0.0, 3.5])


def test_gae_lambda_one_gives_discounted_monte_carlo_returns() -> None:
    rewards = column(0.0, -1.0, 1.0)
    values = column(0.3, -0.2, 0.7)
    next_values = column(-0.2, 0.7, 99.0)  # 99 must be ignored: the episode terminated
    terminated = column(0, 0, 1)
    truncated = column(0, 0, 0)
    _, returns = compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.9, gae_lambda=1.0)
    assert returns.squeeze(1).tolist() == pytest.approx([0.9 * -1.0 + 0.81 * 1.0, -1.0 + 0.9, 1.0])


def test_gae_lambda_zero_is_one_step_td_and_envs_are_independent() -> None:
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.2, 0.4], [0.6, 0.8]], dtype=torch.float64)
    next_values = torch.tensor([[0.6, 0.8], [1.0, 2.0]], dtype=torch.float64)
    zeros = torch.zeros_like(values)
    advantages, _ = compute_gae(rewards, values, next_values, zeros, zeros, gamma=0.9, gae_lambda=0.0)
    expected = rewards + 0.9 * next_values - values
    assert torch.allclose(advantages, expected)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        compute_gae(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(3, 1), torch.zeros(3, 1), 0.9, 0.9)


def test_clipped_policy_loss_by_hand() -> None:
    old = torch.zeros(3, dtype=torch.float64)
    log_probs = torch.log(torch.tensor([1.5, 0.5, 1.05], dtype=torch.float64)).requires_grad_(True)
    advantages = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
    loss, clip_fraction, approx_kl = clipped_policy_loss(log_probs, old, advantages, clip_range=0.2)
    # min terms: 1.2 (clipped), 0.5 (unclipped, ratio below 1-eps but the min keeps it), -2.1
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.1) / 3)
    assert clip_fraction.item() == pytest.approx(2 / 3)
    expected_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.05 - math.log(1.05))) / 3
    assert approx_kl.item() == pytest.approx(expected_kl)
    loss.backward()
    # the clipped sample passes no gradient; d/dlogp of -rho*A/3 = -rho*A/3 for the others
    assert log_probs.grad.tolist() == pytest.approx([0.0, -0.5 / 3, 2.1 / 3])


def test_clipped_value_loss_by_hand() -> None:
    values = torch.tensor([1.0, 2.0])
    old = torch.tensor([0.8, 2.5])
    returns = torch.tensor([2.0, 1.0])
    # clipped predictions 0.9 and 2.4 are further from the returns, so they win the max
    assert clipped_value_loss(values, old, returns, 0.1).item() == pytest.approx(0.5 * (1.21 + 1.96) / 2)
    assert clipped_value_loss(values, old, returns, None).item() == pytest.approx(0.5)


def test_normalize_advantages_and_kl_and_schedule() -> None:
    normalised = normalize_advantages(torch.tensor([1.0, 2.0, 3.0]))
    assert normalised.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert normalize_advantages(torch.tensor([5.0])).tolist() == [0.0]
    kl = kl_to_reference(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 0.0]))
    assert kl.tolist() == pytest.approx([0.0, math.e - 2.0])
    assert cosine_learning_rate(0, 10, 1e-5, 1e-9) == pytest.approx(1e-5)
    assert cosine_learning_rate(5, 10, 1e-5, 1e-9) == pytest.approx((1e-5 + 1e-9) / 2)
    assert cosine_learning_rate(10, 10, 1e-5, 1e-9) == pytest.approx(1e-9)
    assert cosine_learning_rate(12, 10, 1e-5, 1e-9) == pytest.approx(1e-9)


def test_unclipped_value_loss_passes_the_gradient_the_clipped_one_stops() -> None:
    values = torch.tensor([1.0, 3.0], requires_grad=True)
    old = torch.tensor([0.0, 3.0])
    returns = torch.tensor([4.0, 2.0])
    loss = clipped_value_loss(values, old, returns, None)
    # 0.5 * mean((1-4)^2, (3-2)^2) = 0.5 * (9 + 1) / 2
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    # d/dV of 0.25 * (V - R)^2 = 0.5 * (V - R)
    assert values.grad.tolist() == pytest.approx([-1.5, 0.5])

    clipped_values = torch.tensor([1.0, 3.0], requires_grad=True)
    clipped = clipped_value_loss(clipped_values, old, returns, 0.5)
    # sample 0: V moved 1.0 from V_old, its clipped twin 0.5 is further from R=4: max takes the
    # clipped branch, which is constant in V (no gradient); sample 1 is unaffected by the clip.
    assert clipped.item() == pytest.approx(0.5 * (3.5**2 + 1.0) / 2)
    clipped.backward()
    assert clipped_values.grad.tolist() == pytest.approx([0.0, 0.5])


def test_explained_variance_by_hand() -> None:
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # Var(targets) = 1.25; residuals (0, 0, 0, -1): Var = 0.25 - 0.0625 = 0.1875 -> 1 - 0.15
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0, 5.0]), targets) == pytest.approx(0.85)
    assert explained_variance(targets.clone(), targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), targets) == pytest.approx(0.0)  # predicting the mean
    # a constant offset is explained away by the variance (Var ignores the mean)
    assert explained_variance(targets + 7.0, targets) == pytest.approx(1.0)
    # anti-correlated predictions: residuals 2*t - 5 have Var = 4 * 1.25 -> 1 - 4 = -3
    assert explained_variance(torch.tensor([4.0, 3.0, 2.0, 1.0]), targets) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(torch.zeros(3), torch.ones(3)))


def test_constant_and_cosine_schedules() -> None:
    assert [scheduled_learning_rate("constant", u, 10, 1e-5, 1e-9) for u in (0, 5, 10, 20)] == [1e-5] * 4
    assert scheduled_learning_rate("cosine", 5, 10, 1e-5, 1e-9) == pytest.approx((1e-5 + 1e-9) / 2)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        scheduled_learning_rate("linear", 0, 10, 1e-5, 1e-9)


def test_kl_penalty_keeps_its_gradient_where_the_policy_drifted_most() -> None:
    # r = ref - logp = 30: far beyond the old +-20 clamp, whose gradient there was exactly 0.
    log_probs = torch.tensor([-40.0, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-10.0, 0.0, -25.0], dtype=torch.float64)
    kl = kl_to_reference(log_probs, ref)
    assert torch.isfinite(kl).all() and (kl >= 0).all()
    limit = 20.0
    # r = 30: tangent of exp at 20; r = 1: exact k3; r = -25: exp(-25) - (-25) - 1
    assert kl.tolist() == pytest.approx(
        [math.exp(limit) * (1 + 30 - limit) - 30 - 1, math.e - 2.0, math.exp(-25) + 24.0]
    )
    kl.sum().backward()
    # dk3/dlogp = 1 - d exp(r)/dr: 1 - exp(20) on the linear part, 1 - e at r = 1
    assert log_probs.grad.tolist() == pytest.approx([1 - math.exp(limit), 1 - math.e, 1 - math.exp(-25)])
    # continuous at the switch point
    at = kl_to_reference(torch.tensor([-limit], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    above = kl_to_reference(torch.tensor([-limit - 1e-9], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    assert above.item() == pytest.approx(at.item(), rel=1e-6)
