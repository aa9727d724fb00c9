"""The distribution the policy samples from, and the generation settings that keep it so.

:class:`ScoringLogitsProcessor` is the sampler: it draws each token from ``softmax(logits / T)``
with the special tokens (:func:`suppressed_special_ids`) suppressed and records the drawn token's
log-prob, which PPO stores as the "old" log-prob. :func:`neutral_generation_config` builds the
``GenerationConfig`` that runs it, with every other logits processor of Hugging Face's
``generate`` neutral, so the model's own generation config cannot change what is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    PreTrainedModel,
    ProcessorMixin,
)


def _eos_token_ids(model: PreTrainedModel, processor: ProcessorMixin) -> list[int]:
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if processor.tokenizer.eos_token_id is not None:
        ids.add(processor.tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model has no EOS token: set tokenizer.eos_token or generation_config.eos_token_id")
    return sorted(ids)


def suppressed_special_ids(processor: ProcessorMixin, eos_token_ids: Sequence[int]) -> list[int]:
    """Special token ids the policy may not generate: every special/added-special token except EOS.

    A sampled image placeholder would make the completion unscorable ("image features and image
    tokens do not match"), and padding or BOS inside an answer means nothing.
    """
    tokenizer = processor.tokenizer
    special = set(tokenizer.all_special_ids)
    special.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    return sorted(special - set(eos_token_ids))


#: Neutral values of the generation options that would otherwise add logits processors, so that a
#: model's own ``generation_config`` (real Qwen2-VL ships ``repetition_penalty=1.05``) cannot change
#: the distribution the policy samples from and scores.
NEUTRAL_PROCESSOR_OPTIONS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "guidance_scale": 1.0,
    "min_new_tokens": 0,  # takes precedence over min_length
    "remove_invalid_values": False,
    "renormalize_logits": False,
}
#: Sampling-only options at the values greedy generation expects (no "only used in sample-based
#: modes" warnings when a model's config sets e.g. ``temperature=0.1``).
GREEDY_SAMPLING_OPTIONS: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
#: Generation options with no neutral value other than None (a model config that sets one is refused).
UNSUPPORTED_PROCESSOR_OPTIONS = (
    "bad_words_ids",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "begin_suppress_tokens",
    "watermarking_config",
)


class ScoringLogitsProcessor(LogitsProcessor):
    """The policy's sampler: draws each token from ``softmax(logits / T)`` with the special tokens
    suppressed, and records the log-prob of every drawn token on the way.

    Generation runs greedy (``do_sample=False``) with this as its only logits processor: each step
    it returns the log-probs with ``+inf`` at the token it drew, so the argmax reads out its choice.
    Drawing here rather than in ``generate`` saves a second softmax and ``torch.multinomial``,
    which on CPU costs about 15x an inverse-CDF draw (180 vs 12 us at batch 8, vocabulary 1024).
    Rows that already ended get padding from ``generate`` whatever is drawn; their log-probs are
    masked away by the caller.

    Formulas: ``log p_t(v) = z_t[v] / T - logsumexp(z_t / T)`` over the tokens not suppressed (the
    same numbers as :func:`vlm_agent.algorithms.cot_log_prob.token_log_probs_and_entropy` on a second forward);
    the draw is :func:`draw_from_probabilities` of ``p_t``.
    """

    def __init__(self, temperature: float, suppressed_token_ids: Sequence[int], device: torch.device) -> None:
        self.temperature = temperature
        self.suppressed = torch.as_tensor(list(suppressed_token_ids), dtype=torch.long, device=device)
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scores.float() / self.temperature
        if len(self.suppressed):
            scaled.index_fill_(-1, self.suppressed, float("-inf"))
        log_probs = torch.log_softmax(scaled, dim=-1)
        tokens = draw_from_probabilities(log_probs.exp())
        self.steps.append(log_probs.gather(-1, tokens[:, None]).squeeze(-1))
        return log_probs.scatter_(-1, tokens[:, None], float("inf"))

    def token_log_probs(self, batch_size: int) -> torch.Tensor:
        """Log-prob of each drawn token, ``[N, steps]``."""
        if not self.steps:
            return torch.zeros((batch_size, 0), device=self.suppressed.device)
        return torch.stack(self.steps, dim=1)


def draw_from_probabilities(probs: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row of ``probs`` ``[N, V]`` (non-negative, not necessarily normalised), by inverse CDF.

    ``index = min(min{v : C[v] > U * C[V-1]}, last)`` with ``C = cumsum(probs)``, ``U ~ Uniform[0, 1)``
    (``uniform`` ``[N, 1]``, drawn from the global torch generator when None) and ``last`` the first
    index where ``C`` reaches its total, i.e. the last one with positive probability: index ``v``
    comes with probability ``probs[v] / sum(probs)`` and a zero entry (an empty interval) never,
    also when rounding puts ``U * C[V-1]`` at the total. No host synchronisation (GPU-friendly).
    """
    cdf = torch.cumsum(probs, dim=-1)
    total = cdf[:, -1:]
    if uniform is None:
        uniform = torch.rand((probs.shape[0], 1), dtype=cdf.dtype, device=cdf.device)
    tokens = torch.searchsorted(cdf, uniform.to(cdf.dtype) * total, right=True).squeeze(-1)
    last_positive = (cdf >= total).int().argmax(dim=-1)
    return torch.minimum(tokens, last_positive)


def neutral_generation_config(
    model_generation_config: GenerationConfig,
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    **options: Any,
) -> GenerationConfig:
    """Generation config with ``options`` and every other logits processor neutral.

    ``model_generation_config`` (the model's own) fills whatever a config passed to ``generate``
    leaves unset; neutral values keep its processors out (real Qwen2-VL ships
    ``repetition_penalty=1.05``), so that the sampling distribution stays the one the policy
    scores. Raises ValueError when the model's config sets an option that has no neutral value.
    """
    refused = [
        name for name in UNSUPPORTED_PROCESSOR_OPTIONS if getattr(model_generation_config, name, None) is not None
    ]
    if refused:
        raise ValueError(
            f"the model's generation_config sets {refused}, which would change the distribution the policy "
            "samples from but not the one it scores; set them to None in the model's generation_config.json"
        )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_token_ids),
        pad_token_id=pad_token_id,
        **{**NEUTRAL_PROCESSOR_OPTIONS, **options},
    )
