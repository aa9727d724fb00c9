"""Rollout engines: what turns a batch of prompts and images into sampled, scored answers.

An engine generates one answer per observation and scores it: the sampled token ids, the
CoT-scaled log-probability they had when sampled and the value estimate, all kept in a
:class:`~vlm_agent.models.batching.PolicySample` (whose ``text`` is the decoded answer). It is an
:class:`~vlm_agent.rollout.agent.Agent` too, so the one loop (:mod:`vlm_agent.rollout.loop`) plays
it like any other agent, and the trainer re-scores the very token ids it sampled
(:meth:`vlm_agent.models.policy.VLMPolicy.evaluate`); nothing is re-tokenized from decoded text.

:class:`HFEngine` is the in-process Hugging Face engine: one seeded batched ``generate`` per step.
Acting needs one model pass only: the old log-probs PPO stores are recorded while sampling (the
sampler is :class:`vlm_agent.models.sampler.ScoringLogitsProcessor`) and the value comes from the
prefill's hidden state, so no second forward over prompt + answer
(``HFEngine(..., recompute_scores=True)`` still does one, to check).

Example (the tiny model is randomly initialised, so its answers are junk until trained)::

    import numpy as np
    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.rollout.agent import AgentInput
    from vlm_agent.rollout.engine import HFEngine

    policy = VLMPolicy.from_model(make_tiny_model("qwen2_vl", "/tmp/tiny"))
    engine = HFEngine(policy, np.random.default_rng(0))
    image = np.zeros((112, 112, 3), dtype=np.uint8)
    (sample,) = engine.respond([AgentInput(image, "Pick + or -.", ["-", "+"], None)])
    scores = policy.evaluate([sample])   # log_probs, values, entropy, with gradients
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList, StaticCache

from vlm_agent.algorithms.cot_log_prob import cot_scaled_log_prob, thought_action_masks
from vlm_agent.models.batching import PER_TOKEN_KEYS, PolicySample, split_image_inputs
from vlm_agent.models.policy import ImageLike, VLMPolicy
from vlm_agent.models.sampler import (
    GREEDY_SAMPLING_OPTIONS,
    ScoringLogitsProcessor,
    neutral_generation_config,
)
from vlm_agent.rollout.agent import AgentInput, TokenUsage


class RolloutEngine(Protocol):
    """Generates and scores a batch: the interface behind the loop's learning agent.

    Implemented by :class:`HFEngine` (in-process) and :class:`vlm_agent.rollout.vllm_engine.VLLMEngine`
    (a vLLM server). Both are agents (``respond``, ``usage``, ``close``) whose answers are
    :class:`PolicySample` objects holding the sampled token ids themselves.
    """

    policy: VLMPolicy
    """The policy being trained: its value head bootstraps truncated episodes."""
    rng: np.random.Generator
    """Draws the sampling seeds (and, in the collectors, resolves unusable answers)."""
    generation_seconds: float
    """Seconds spent in :meth:`generate` so far."""

    def generate(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 legal_actions: Sequence[Sequence[str]]) -> list[PolicySample]:
        """One sampled answer per observation, with ``text``, ``log_prob`` and ``value`` set."""
        ...

    def respond(self, inputs: Sequence[AgentInput]) -> list[PolicySample]:
        """:meth:`generate` for the loop's inputs."""
        ...

    def usage(self) -> TokenUsage:
        """Tokens read and generated so far."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a server it started)."""
        ...


@dataclass
class GenerationScores:
    """What one batched generation measured on the way, enough to score its answers without a second forward.

    Attributes:
        token_log_probs: ``[N, C]`` log-prob of each sampled token under ``softmax(logits / T)`` with
            the special tokens suppressed (what sampling drew from), 0 after each answer's end.
        prompt_hidden: ``[N, H]`` final hidden state of the last prompt token (the value head's
            input), from the prefill forward.
    """

    token_log_probs: torch.Tensor
    prompt_hidden: torch.Tensor


class HFEngine:
    """A :class:`VLMPolicy` sampling in-process with Hugging Face ``generate``.

    Args:
        policy: The policy that acts.
        rng: Draws each batch's sampling seed (torch is seeded from it inside a forked RNG
            state), so equal generators give equal samples.
        name: Row name, as an agent.
        recompute_scores: Score the answers with a second forward (:meth:`VLMPolicy.evaluate`)
            instead of taking the log-probs and values that generation measured on the way
            (:meth:`sample_scored`). Same numbers up to float rounding, several times slower at
            large batch; for verification.
    """

    uses_expert_action = False

    def __init__(self, policy: VLMPolicy, rng: np.random.Generator, *, name: str = "hf",
                 recompute_scores: bool = False) -> None:
        self.policy = policy
        self.rng = rng
        self.name = name
        self.recompute_scores = recompute_scores
        self.generation_seconds = 0.0
        self._usage = TokenUsage()

    # ------------------------------------------------------------------ as an agent
    def respond(self, inputs: Sequence[AgentInput]) -> list[PolicySample]:
        """Sample and score one answer per input (see :meth:`generate`)."""
        return self.generate([i.image for i in inputs], [i.prompt for i in inputs],
                             [i.legal_actions for i in inputs])

    def usage(self) -> TokenUsage:
        """Tokens read and generated so far (counted locally)."""
        return self._usage

    def close(self) -> None:
        """Nothing to release; the model belongs to the policy."""

    # ------------------------------------------------------------------ generate + score
    def generate(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 legal_actions: Sequence[Sequence[str]]) -> list[PolicySample]:
        """Sample one answer per observation (all N at once) and score it.

        Each returned sample holds its decoded ``text``, the sampled token ids, the CoT-scaled
        log-prob at the sampling temperature and the value estimate. Runs under
        ``torch.no_grad()`` (not ``inference_mode``: the stored tensors may later meet autograd)
        with the model in eval mode (restored afterwards).
        """
        n = len(prompts)
        if len(legal_actions) != n:
            raise ValueError(f"got {n} prompts but {len(legal_actions)} legal-action lists")
        if any(len(legal) == 0 for legal in legal_actions):
            raise ValueError("every observation needs at least one legal action")
        started = time.perf_counter()
        inputs = self.policy.prepare_inputs(images, prompts)
        was_training = self.policy.model.training
        self.policy.eval()
        try:
            with torch.no_grad():
                seed = int(self.rng.integers(0, 2**31 - 1))
                if self.recompute_scores:
                    samples, _ = self.sample(inputs, seed=seed, legal_actions=legal_actions)
                    scores = self.policy.evaluate(samples)
                    for sample, log_prob, value in zip(samples, scores.log_probs.tolist(), scores.values.tolist(),
                                                       strict=True):
                        sample.log_prob, sample.value = log_prob, value
                else:
                    samples, generation_scores = self.sample_scored(inputs, seed=seed, legal_actions=legal_actions)
                    self.score_samples(samples, generation_scores)
        finally:
            self.policy.train(was_training)
        self.generation_seconds += time.perf_counter() - started
        self._usage = self._usage + TokenUsage(
            prompt_tokens=sum(int(sample.prompt_ids.numel()) for sample in samples),
            completion_tokens=sum(int(sample.completion_ids.numel()) for sample in samples),
            requests=n,
        )
        return samples

    def _generation_config(self, **options: Any) -> GenerationConfig:
        """Generation config with ``options`` and every other logits processor neutral (see
        :func:`vlm_agent.models.sampler.neutral_generation_config`)."""
        return neutral_generation_config(
            self.policy._base_model.generation_config,
            max_new_tokens=self.policy.settings.max_new_tokens,
            eos_token_ids=self.policy.eos_token_ids,
            pad_token_id=self.policy.pad_token_id,
            **options,
        )

    def sample(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        seed: int,
        legal_actions: Sequence[Sequence[str]],
        output_scores: bool = False,
    ) -> tuple[list[PolicySample], torch.Tensor | None]:
        """Generate one answer per row of ``inputs`` (from :meth:`VLMPolicy.prepare_inputs`) and store them.

        ``legal_actions`` (one list per row) is what each answer is parsed against to split its
        thought and action masks (:func:`vlm_agent.algorithms.cot_log_prob.thought_action_masks`).

        Sampling is seeded with ``seed`` inside a forked RNG state (the global torch RNG is left
        as it was). Returns the samples (``log_prob``/``value`` still NaN: :meth:`generate` fills them)
        and, with ``output_scores``, generation's own per-token log-probs ``[N, C]`` (log-softmax
        of the processed scores, i.e. of logits / T with suppression), 0 after each answer's end.
        Call it under ``torch.no_grad()``.
        """
        samples, token_log_probs, _ = self._generate(
            inputs, seed=seed, capture_prompt_hidden=False, legal_actions=legal_actions
        )
        return samples, token_log_probs if output_scores else None

    def sample_scored(
        self, inputs: dict[str, torch.Tensor], *, seed: int, legal_actions: Sequence[Sequence[str]]
    ) -> tuple[list[PolicySample], GenerationScores]:
        """Like :meth:`sample`, also returning what the PPO buffer needs from this one generation.

        The per-token log-probs come from the sampling distribution itself (see
        :class:`ScoringLogitsProcessor`) and the value head's input from the prefill forward (a
        forward hook on the text decoder keeps only the last prompt token's final hidden state), so
        no second forward over prompt + answer is needed. :meth:`score_samples` turns them into the
        CoT-scaled log-probs and values. Call it under ``torch.no_grad()`` in eval mode.
        """
        samples, token_log_probs, prompt_hidden = self._generate(
            inputs, seed=seed, capture_prompt_hidden=True, legal_actions=legal_actions
        )
        assert prompt_hidden is not None
        return samples, GenerationScores(token_log_probs, prompt_hidden)

    def score_samples(
        self, samples: Sequence[PolicySample], scores: GenerationScores
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CoT-scaled log-probs ``[N]`` and values ``[N]`` of freshly sampled answers, from ``scores``.

        Stores them in each sample (``log_prob``, ``value``) too. The log-prob is
        :func:`vlm_agent.algorithms.cot_log_prob.cot_scaled_log_prob` over each answer's thought and action masks,
        the value is the value head on the last prompt token's hidden state: what :meth:`evaluate`
        computes from a second forward.
        """
        token_log_probs = scores.token_log_probs
        width = token_log_probs.shape[1]
        thought = torch.zeros(token_log_probs.shape, dtype=torch.bool)
        action = torch.zeros(token_log_probs.shape, dtype=torch.bool)
        for row, sample in enumerate(samples):
            length = len(sample.completion_ids)
            if length > width:
                raise ValueError(f"sample {row} has {length} tokens but its scores cover only {width}")
            thought[row, :length] = sample.thought_mask
            action[row, :length] = sample.action_mask
        device = token_log_probs.device
        log_probs = cot_scaled_log_prob(
            token_log_probs, thought.to(device), action.to(device), self.policy.settings.cot_scale
        ).cpu()
        values = self.policy.values_of(scores.prompt_hidden).cpu()
        for sample, log_prob, value in zip(samples, log_probs.tolist(), values.tolist(), strict=True):
            sample.log_prob, sample.value = log_prob, value
        return log_probs, values

    def _generate(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        seed: int,
        capture_prompt_hidden: bool,
        legal_actions: Sequence[Sequence[str]],
    ) -> tuple[list[PolicySample], torch.Tensor, torch.Tensor | None]:
        """One seeded batched ``generate``: samples, per-token log-probs ``[N, C]`` (CPU) and, when
        asked, the last prompt token's final hidden state ``[N, H]`` (model device)."""
        cuda_index = self.policy.device.index if self.policy.device.index is not None else 0
        devices = [cuda_index] if self.policy.device.type == "cuda" else []
        scorer = ScoringLogitsProcessor(self.policy.settings.temperature, self.policy.suppressed_token_ids, self.policy.device)
        prompt_length = inputs["input_ids"].shape[1]
        if len(legal_actions) != inputs["input_ids"].shape[0]:
            raise ValueError(f"got {inputs['input_ids'].shape[0]} prompts but {len(legal_actions)} legal-action lists")
        with torch.random.fork_rng(devices=devices), self._prompt_hidden_hook(capture_prompt_hidden) as captured:
            torch.manual_seed(seed)
            # Greedy over the scorer's output is a draw from the policy (see ScoringLogitsProcessor).
            sequences = self.policy.model.generate(
                **inputs,
                generation_config=self._generation_config(
                    do_sample=False, **GREEDY_SAMPLING_OPTIONS, disable_compile=True
                ),
                logits_processor=LogitsProcessorList([scorer]),
                cache=self.make_kv_cache(prompt_length + self.policy.settings.max_new_tokens),
            )
        completions = sequences[:, prompt_length:]
        samples = self._split_samples(inputs, completions, legal_actions)
        log_probs = scorer.token_log_probs(len(sequences))[:, : completions.shape[1]]
        lengths = torch.tensor([len(s.completion_ids) for s in samples], device=log_probs.device)
        real = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] < lengths[:, None]
        log_probs = torch.where(real, log_probs, torch.zeros_like(log_probs)).cpu()
        if capture_prompt_hidden and captured.get("length") != prompt_length:
            raise RuntimeError(
                f"generation's first forward covered {captured.get('length')} of {prompt_length} prompt tokens "
                "(chunked prefill?), so it gives no value estimate; use HFEngine(..., recompute_scores=True)"
            )
        return samples, log_probs, captured.get("hidden")

    def make_kv_cache(self, max_length: int) -> StaticCache | None:
        """The key/value cache generation writes into, for :attr:`GenerationSettings.kv_cache`.

        ``"static"``: a :class:`transformers.StaticCache` of ``max_length`` positions (prompt +
        ``max_new_tokens``), allocated at the first forward and written in place afterwards.
        ``"dynamic"``: ``None``, so Hugging Face grows its default cache token by token. Generation
        runs with ``disable_compile``: on a GPU, Hugging Face would otherwise compile the forward by
        itself once the cache is static, once per new batch shape, which an RL loop with changing
        batches does not want.
        """
        if self.policy.settings.kv_cache == "static":
            return StaticCache(config=self.policy._base_model.config, max_cache_len=max_length)
        return None

    @contextmanager
    def _prompt_hidden_hook(self, enabled: bool) -> Iterator[dict[str, Any]]:
        """While active, the yielded dict gets the text decoder's first forward (the prefill): its
        last position's final hidden state (``"hidden"``, ``[N, H]``) and its length (``"length"``).

        The decoder's ``last_hidden_state`` is after the final norm, the same tensor as
        ``hidden_states[-1]`` of a full forward (what :meth:`evaluate` reads). Only one position is
        kept, never the whole prefill or later steps.
        """
        captured: dict[str, Any] = {}
        if not enabled:
            yield captured
            return

        def keep_first(module: torch.nn.Module, args: Any, output: Any) -> None:
            if "hidden" not in captured:
                hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
                captured["hidden"] = hidden[:, -1].clone()
                captured["length"] = hidden.shape[1]

        handle = self.policy._base_model.get_decoder().register_forward_hook(keep_first)
        try:
            yield captured
        finally:
            handle.remove()

    def _split_samples(
        self, inputs: dict[str, torch.Tensor], completions: torch.Tensor, legal_actions: Sequence[Sequence[str]]
    ) -> list[PolicySample]:
        """Cut a generated batch into per-observation CPU records (padding removed, EOS kept)."""
        eos = torch.as_tensor(self.policy.eos_token_ids)
        answers = []
        for completion in completions.cpu():
            is_eos = torch.isin(completion, eos).nonzero()
            answers.append(completion[: int(is_eos[0]) + 1 if len(is_eos) else len(completion)].clone())
        return samples_from_answers(self.policy, inputs, answers, legal_actions)


def samples_from_answers(
    policy: VLMPolicy, inputs: dict[str, torch.Tensor], answers: Sequence[torch.Tensor],
    legal_actions: Sequence[Sequence[str]],
) -> list[PolicySample]:
    """One CPU :class:`PolicySample` per row of ``inputs`` (from :meth:`VLMPolicy.prepare_inputs`) and its
    sampled answer ids (EOS kept, no padding); ``log_prob`` and ``value`` are left NaN.

    The thought/action masks split each answer where the parser, reading it against its row's legal
    actions, finds the action; ``text`` is the answer decoded with special tokens skipped.
    """
    attention = inputs["attention_mask"].bool().cpu()
    image_inputs = split_image_inputs(
        {k: v for k, v in inputs.items() if k not in PER_TOKEN_KEYS and k != "input_ids"}, len(answers)
    )
    tokenizer = policy.processor.tokenizer
    samples = []
    for row, (completion_ids, legal) in enumerate(zip(answers, legal_actions, strict=True)):
        thought, action = thought_action_masks(tokenizer, completion_ids.tolist(), list(legal))
        keep = attention[row]
        samples.append(
            PolicySample(
                prompt_ids=inputs["input_ids"][row].cpu()[keep].clone(),
                prompt_token_inputs={
                    k: inputs[k][row].cpu()[keep].clone() for k in PER_TOKEN_KEYS if k in inputs and k != "attention_mask"
                },
                image_inputs=image_inputs[row],
                completion_ids=completion_ids,
                thought_mask=thought,
                action_mask=action,
                log_prob=float("nan"),
                value=float("nan"),
                text=tokenizer.decode(completion_ids.tolist(), skip_special_tokens=True),
            )
        )
    return samples
