"""How a policy samples and scores its answers (:class:`GenerationSettings`), without importing torch,
so that configuration types can check against it."""

from __future__ import annotations

from dataclasses import dataclass

KV_CACHES = ("static", "dynamic")
"""Key/value caches generation can write into (see :attr:`GenerationSettings.kv_cache`)."""


@dataclass
class GenerationSettings:
    """How the policy samples and scores its answers.

    Attributes:
        temperature: sampling temperature T (> 0); log-probs are computed at logits / T.
            Paper: 0.2.
        max_new_tokens: longest answer in tokens (paper: 256).
        cot_scale: lambda of the CoT-scaled log-prob, in [0, 1] (paper: 0.5 cards, 0.2 ALFWorld).
        kv_cache: ``"static"`` preallocates the key/value cache for prompt + ``max_new_tokens`` and
            writes each step in place; ``"dynamic"`` grows it by concatenation every step (Hugging
            Face's default). Same samples and log-probs; static is faster when decoding is
            overhead-bound (1.2x per decode step at batch 8 on CPU) and is what ``torch.compile``
            needs.
    """

    temperature: float = 0.2
    max_new_tokens: int = 256
    cot_scale: float = 0.5
    kv_cache: str = "static"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (paper: 0.2), got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (paper: 256), got {self.max_new_tokens}")
        if not 0.0 <= self.cot_scale <= 1.0:
            raise ValueError(f"cot_scale must lie in [0, 1] (paper: 0.2-0.5), got {self.cot_scale}")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {list(KV_CACHES)}, got {self.kv_cache!r}")
