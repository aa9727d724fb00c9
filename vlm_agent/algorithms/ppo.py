"""The arithmetic of PPO, as small pure functions over tensors.

Shapes: rollout quantities are `[T, N]` (T steps of N parallel environments); per-sample
quantities in a mini-batch are `[B]`. One sample is one environment step: the whole generated
answer is one action, its log-probability the CoT-scaled sum of :mod:`vlm_agent.algorithms.cot_log_prob`.
:class:`PPO` puts them behind the trainer's :class:`~vlm_agent.algorithms.base.Algorithm` interface.

References: Schulman et al. 2016 (GAE, arXiv 1506.02438), Schulman et al. 2017 (PPO, arXiv
1707.06347); the value clipping follows the original RL4VLM code base (a2c-ppo-acktr style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vlm_agent.algorithms.base import Advantages, MiniBatchScores, RolloutTensors


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimates and returns over a rollout.

    All inputs are `[T, N]`. `next_values[t]` is the value of the observation that followed step t:
    the next observation while the episode goes on, the *final* observation when the episode ended
    at t (truncated episodes bootstrap from it), and the value of the observation after the last
    step for t = T-1. Episodes that end at t do not pass credit back across the reset:

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   done_t = terminated_t or truncated_t
        R_t     = A_t + values_t                                       (the value target)

    A terminated step has no future (the value of a terminal state is 0); a truncated step was
    cut by a time limit, so its future is estimated by `next_values_t`.

    Returns:
        `(advantages, returns)`, both `[T, N]` in the dtype of `values`.
    """
    if not rewards.shape == values.shape == next_values.shape == terminated.shape == truncated.shape:
        raise ValueError(
            "compute_gae needs rewards, values, next_values, terminated and truncated of one shape [T, N]; got "
            f"{[tuple(x.shape) for x in (rewards, values, next_values, terminated, truncated)]}"
        )
    dtype = values.dtype
    not_terminated = 1.0 - terminated.to(dtype)
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)
    deltas = rewards.to(dtype) + gamma * not_terminated * next_values.to(dtype) - values
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""Standardise advantages: (A - mean(A)) / (std(A) + eps); a single sample is only centred."""
    centred = advantages - advantages.mean()
    if advantages.numel() < 2:
        return centred
    return centred / (advantages.std() + eps)


def clipped_policy_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""PPO's clipped surrogate, to be minimised.

        rho_i = exp(log pi(a_i|s_i) - log pi_old(a_i|s_i))
        L     = -mean_i min(rho_i * A_i, clip(rho_i, 1 - eps, 1 + eps) * A_i)

    Returns:
        `(loss, clip_fraction, approx_kl)`: clip_fraction is the share of samples with
        |rho - 1| > eps; approx_kl = mean((rho - 1) - log rho) (Schulman's k3 estimate of
        KL(pi_old || pi), always >= 0). Both statistics are detached.
    """
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
    return loss, clip_fraction, approx_kl


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range_value: float | None
) -> torch.Tensor:
    r"""Value loss, optionally clipped around the rollout-time values.

        unclipped: L = 0.5 * mean_i (V_i - R_i)^2
        clipped:   V_i^clip = V_old_i + clip(V_i - V_old_i, -eps_v, eps_v)
                   L = 0.5 * mean_i max((V_i - R_i)^2, (V_i^clip - R_i)^2)
    """
    unclipped = (values - returns) ** 2
    if clip_range_value is None:
        return 0.5 * unclipped.mean()
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    clipped = (values_clipped - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


#: Above this log-ratio the exponential of `kl_to_reference` continues as its tangent line, so the
#: penalty stays finite (exp(20) ~ 4.9e8) and keeps a gradient.
KL_LOG_RATIO_LINEAR_ABOVE = 20.0


def kl_to_reference(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    r"""Per-sample k3 penalty towards the reference policy (Schulman's "approximating KL" estimator).

        r  = log pi_ref(a|s) - log pi(a|s)
        k3 = exp(r) - r - 1                       (>= 0, = 0 exactly when r = 0)

    What it estimates, precisely: for actions drawn from pi, E[k3] = KL(pi || pi_ref). PPO's
    actions were drawn from pi_old (the rollout policy), so the mean over a mini-batch estimates
    KL(pi || pi_ref) only as far as pi stays close to pi_old (the clipped trust region). With the
    CoT scaling of `vlm_agent.algorithms.cot_log_prob` (lambda < 1) the "log-probs" are lambda-weighted sums that are
    not normalised over answers, so k3 is then a penalty on the gap between the policy's and the
    reference's scaled scores (zero when they agree, growing with the gap), not the KL of two
    distributions.

    For r > `KL_LOG_RATIO_LINEAR_ABOVE` (c), exp(r) is replaced by its tangent at c,
    exp(c) * (1 + r - c): sequence-level log-probs of long answers can differ by tens of nats and
    the penalty must stay finite, but a hard clamp would zero the gradient exactly on the samples
    that drifted furthest from the reference. The gradient there is -(exp(c) - 1) per unit of
    log pi instead of 0. For r -> -inf, exp(r) -> 0 and needs no guard.
    """
    log_ratio = ref_log_probs - log_probs
    limit = KL_LOG_RATIO_LINEAR_ABOVE
    # exp of the capped value: the branch torch.where does not take must not overflow to inf
    # (inf * 0 would be a NaN gradient).
    exponential = torch.exp(torch.clamp(log_ratio, max=limit))
    linear = math.exp(limit) * (1.0 + log_ratio - limit)
    return torch.where(log_ratio > limit, linear, exponential) - log_ratio - 1.0


def cosine_learning_rate(update: int, num_updates: int, max_lr: float, min_lr: float) -> float:
    r"""Cosine annealing from `max_lr` (update 0) to `min_lr` (update `num_updates`), flat after.

        lr(u) = min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * min(u, U) / U))
    """
    if num_updates <= 0:
        return max_lr
    progress = min(update, num_updates) / num_updates
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def scheduled_learning_rate(
    schedule: str, update: int, num_updates: int, base_lr: float, min_lr: float
) -> float:
    r"""Learning rate of update `update` (0-based): "constant" keeps `base_lr`; "cosine" anneals it
    to `min_lr` with `cosine_learning_rate`."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return cosine_learning_rate(update, num_updates, base_lr, min_lr)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use cosine or constant")


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    r"""1 - Var(targets - predictions) / Var(targets); nan when the targets do not vary."""
    variance = targets.var(unbiased=False)
    if variance.item() == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var(unbiased=False) / variance)


@dataclass
class PPO:
    """PPO with a value head, as RL4VLM trains (Schulman et al. 2017, arXiv 1707.06347): GAE advantages
    over environment steps, the clipped surrogate on the CoT-scaled log-prob, the clipped value loss,
    an entropy bonus and an optional KL term to the reference policy.

    ``loss = policy_loss + vf_coef * value_loss - ent_coef * entropy (+ kl_coef * KL)``.
    """

    gamma: float = 0.9
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    clip_range_value: float | None = 0.1
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    kl_coef: float = 0.0
    normalize: bool = True
    needs_critic: bool = True

    def advantages(self, rollout: RolloutTensors) -> Advantages:
        """GAE over the rollout (:func:`compute_gae`), flattened, normalised when ``normalize``."""
        advantages, returns = compute_gae(
            rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.truncated,
            gamma=self.gamma, gae_lambda=self.gae_lambda,
        )
        advantages = advantages.reshape(-1)
        if self.normalize:
            advantages = normalize_advantages(advantages)
        return Advantages(advantages, returns.reshape(-1))

    def loss(self, scores: MiniBatchScores) -> tuple[torch.Tensor, dict[str, float]]:
        """The PPO loss of a mini-batch (see the class docstring) and its statistics."""
        policy_loss, kl, stats = surrogate_terms(scores, self.clip_range, self.kl_coef)
        values = scores.values.float()
        value_loss = clipped_value_loss(
            values, scores.old_values.to(values.device, values.dtype), scores.returns.to(values.device, values.dtype),
            self.clip_range_value,
        )
        entropy = scores.entropy.mean()
        loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
        if self.kl_coef > 0:
            loss = loss + self.kl_coef * kl
        return loss, {  # the metric order of earlier versions (a resumed run appends to its metrics.csv)
            "losses/policy_loss": stats["losses/policy_loss"],
            "losses/value_loss": float(value_loss.detach()),
            "losses/entropy": float(entropy.detach()),
            **stats,
        }


def surrogate_terms(scores: MiniBatchScores, clip_range: float,
                    kl_coef: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """What every algorithm's loss shares: the clipped surrogate (:func:`clipped_policy_loss`) and, when
    ``kl_coef > 0``, the KL to the reference policy (:func:`kl_to_reference`, else 0), with their statistics."""
    policy_loss, clip_fraction, approx_kl = clipped_policy_loss(
        scores.log_probs, scores.old_log_probs, scores.advantages, clip_range
    )
    kl = torch.zeros((), device=scores.log_probs.device)
    if kl_coef > 0:
        kl = kl_to_reference(scores.log_probs, scores.ref_log_probs.to(scores.log_probs.dtype)).mean()
    return policy_loss, kl, {
        "losses/policy_loss": float(policy_loss.detach()),
        "losses/kl_to_reference": float(kl.detach()),
        "losses/approx_kl": float(approx_kl),
        "losses/clip_fraction": float(clip_fraction),
        "losses/ratio": float(torch.exp(scores.log_probs.detach() - scores.old_log_probs).mean()),
    }
