"""When the rollout engine is not the trainer: how far their log-probs differ, and the truncated
importance-sampling (TIS) correction for it.

An engine outside the trainer (vLLM) samples with other kernels, and sometimes other weights'
precision, than the trainer's forward, so the same policy gives the same tokens slightly different
probabilities there (``q``, the behaviour policy) and here (``p``). Each update logs
:func:`mismatch_stats` over the sampled tokens; ``--old_log_probs engine_tis`` also weights each
answer's policy-gradient term by :func:`truncated_importance_weights`.
"""

from __future__ import annotations

import torch


def mismatch_stats(engine: torch.Tensor, trainer: torch.Tensor) -> tuple[float, float]:
    """Mean ``|log q - log p|`` and the KL estimate ``KL(q || p) ~ mean(log q - log p)`` over sampled tokens.

    ``engine`` (``log q``) and ``trainer`` (``log p``) hold the log-probs of the same sampled tokens
    (flattened over answers). The tokens were drawn from ``q``, so the mean of ``log q - log p`` is
    an unbiased estimate of ``KL(q || p)`` (Schulman's k1 estimator, "Approximating KL
    Divergence", 2020); it can come out slightly negative.
    """
    if engine.shape != trainer.shape:
        raise ValueError(f"engine log-probs {tuple(engine.shape)} and trainer log-probs {tuple(trainer.shape)} differ")
    if engine.numel() == 0:
        return 0.0, 0.0
    delta = engine.double() - trainer.double()
    return float(delta.abs().mean()), float(delta.mean())


def truncated_importance_weights(trainer_log_probs: torch.Tensor, engine_log_probs: torch.Tensor,
                                 cap: float) -> torch.Tensor:
    """``w = min(p(a) / q(a), C)`` per answer: truncated importance sampling (Yao, Liu et al. 2025,
    "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training").

    ``p`` is the trainer's policy at rollout time (the PPO ratio's old policy), ``q`` the engine
    that sampled ``a``: samples from ``q`` weighted by ``p / q`` are samples from ``p``, and the cap
    ``C`` bounds the variance a rare token's large ratio would bring. The weight multiplies the
    answer's advantage (it is a constant: no gradient). Log-probs are the CoT-scaled ones of whole
    answers (one answer is one action).
    """
    if cap <= 0:
        raise ValueError(f"the TIS cap must be positive, got {cap}")
    return torch.exp(trainer_log_probs.double() - engine_log_probs.double()).clamp(max=cap)
