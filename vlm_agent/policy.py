"""A Hugging Face vision-language model as a batched RL policy with a value head.

The loop this module serves: prompt text + image -> :meth:`VLMPolicy.act` (sample an answer,
parse it to a legal action, remember everything needed to score it again) -> environment step
-> :meth:`VLMPolicy.evaluate` (re-score the stored answers with gradients for PPO).

Acting needs one model pass only: the old log-probs PPO stores are recorded while sampling (the
sampler is :class:`vlm_agent.sampler.ScoringLogitsProcessor`) and the value comes from the prefill's hidden state, so
no second forward over prompt + answer (``act(..., recompute_scores=True)`` still does one, to check).

Example (the tiny model is randomly initialised, so its answers are junk until trained)::

    import numpy as np
    from vlm_agent.parsing import InvalidActionPolicy
    from vlm_agent.policy import VLMPolicy
    from vlm_agent.tiny_models import make_tiny_model

    policy = VLMPolicy.from_model(make_tiny_model("qwen2_vl", "/tmp/tiny"))
    image = np.zeros((112, 112, 3), dtype=np.uint8)
    out = policy.act([image], ["Pick + or -."], [["-", "+"]],
                     invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(0))
    scores = policy.evaluate(out.samples)   # log_probs, values, entropy, with gradients

Its parts: :mod:`vlm_agent.sampler` (the sampling distribution and the generation config that
keeps it), :mod:`vlm_agent.batching` (the stored :class:`PolicySample` and how a mini-batch of them
is padded back into model inputs); this module holds the model-facing policy itself (loading and
saving, acting, scoring).

Log-probabilities are the CoT-scaled ones of :mod:`vlm_agent.log_probs`, taken at the sampling
temperature (logits / T) with the same special tokens suppressed as during sampling.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from PIL import Image
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, ProcessorMixin, StaticCache

# The stored-sample and sampler types live in their own modules; they are re-exported here, so
# `from vlm_agent.policy import PolicySample, draw_from_probabilities, ...` keeps working.
from vlm_agent.batching import (
    PER_TOKEN_KEYS,
    CollatedBatch,
    PolicySample,
    collate_image_inputs,
    collate_samples,
    split_image_inputs,
)
from vlm_agent.log_probs import cot_scaled_log_prob, thought_action_masks, token_log_probs_and_entropy
from vlm_agent.models import ModelSettings, load_model_and_processor, load_processor
from vlm_agent.parsing import InvalidActionPolicy, ParsedAction, parse_action, resolve_action
from vlm_agent.ppo_config import KV_CACHES
from vlm_agent.prompts import chat_messages
from vlm_agent.sampler import (
    GREEDY_SAMPLING_OPTIONS,
    NEUTRAL_PROCESSOR_OPTIONS,
    UNSUPPORTED_PROCESSOR_OPTIONS,
    ScoringLogitsProcessor,
    _eos_token_ids,
    draw_from_probabilities,
    neutral_generation_config,
    suppressed_special_ids,
)
from vlm_agent.value_head import ValueHead

__all__ = [
    "MULTIMODAL_ROPE_MODEL_TYPES", "PER_TOKEN_KEYS", "POLICY_SETTINGS_FILE", "ActOutput", "CollatedBatch",
    "EvaluateOutput", "GREEDY_SAMPLING_OPTIONS", "GenerationScores", "GenerationSettings", "ImageLike",
    "NEUTRAL_PROCESSOR_OPTIONS", "PolicySample", "ScoringLogitsProcessor", "UNSUPPORTED_PROCESSOR_OPTIONS",
    "VLMPolicy", "collate_image_inputs", "draw_from_probabilities", "split_image_inputs", "suppressed_special_ids",
    "uses_multimodal_rope",
]

#: Settings file written next to the adapter by :meth:`VLMPolicy.save_pretrained`.
POLICY_SETTINGS_FILE = "policy_settings.json"

ImageLike = np.ndarray | Image.Image


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


@dataclass
class ActOutput:
    """What :meth:`VLMPolicy.act` returns for a batch of N observations (lists have length N)."""

    texts: list[str]
    parsed: list[ParsedAction]
    action_indices: list[int]
    invalid: list[bool]
    reward_adjustments: list[float]
    log_probs: torch.Tensor
    values: torch.Tensor
    samples: list[PolicySample]


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


@dataclass
class EvaluateOutput:
    """Scores of a mini-batch of stored samples (B rows), from one forward pass.

    Attributes:
        log_probs: ``[B]`` CoT-scaled log-probs (with gradients when evaluated with gradients).
        values: ``[B]`` value-head outputs.
        entropy: ``[B]`` mean per-token entropy of each answer at temperature T.
        token_log_probs: ``[B, C]`` per-token log-probs, 0 on padding.
        completion_mask: ``[B, C]`` True on real completion tokens.
        ref_log_probs: ``[B]`` CoT-scaled log-probs with the LoRA adapter disabled (no gradients),
            when asked for.
    """

    log_probs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    token_log_probs: torch.Tensor
    completion_mask: torch.Tensor
    ref_log_probs: torch.Tensor | None = None


#: Model types whose forward derives 3-D rotary positions from the attention mask and image grid.
MULTIMODAL_ROPE_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v"})


def uses_multimodal_rope(model: PreTrainedModel) -> bool:
    """True for models (Qwen2-VL family) that compute their own positions from the attention mask.

    Every other model gets ``position_ids = cumsum(attention_mask) - 1`` in the training forward,
    exactly what generation uses, so that left padding does not shift positions (a plain forward
    would count the padding).
    """
    return model.config.model_type in MULTIMODAL_ROPE_MODEL_TYPES


class VLMPolicy:
    """A VLM policy for PPO: model (optionally with LoRA) + processor + value head + sampling settings.

    Args:
        model: an ``AutoModelForImageTextToText`` model, or a ``PeftModel`` around one.
        processor: its processor (tokenizer with a chat template + image processor).
        value_head: the critic; a fresh :class:`ValueHead` sized to the model when None.
        settings: sampling and scoring settings.
        model_settings: how the model was loaded (saved with the policy for reloading).
    """

    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        processor: ProcessorMixin,
        value_head: ValueHead | None = None,
        settings: GenerationSettings | None = None,
        model_settings: ModelSettings | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings or GenerationSettings()
        self.model_settings = model_settings
        hidden_size = model.config.get_text_config().hidden_size
        self.value_head = value_head if value_head is not None else ValueHead(hidden_size)
        self.device = next(model.parameters()).device
        self.value_head.to(self.device)
        self.processor.tokenizer.padding_side = "left"
        self.eos_token_ids = _eos_token_ids(self._base_model, processor)
        self.suppressed_token_ids = suppressed_special_ids(processor, self.eos_token_ids)
        pad_id = processor.tokenizer.pad_token_id
        self.pad_token_id = self.eos_token_ids[0] if pad_id is None else pad_id
        self.multimodal_rope = uses_multimodal_rope(self._base_model)

    # ------------------------------------------------------------------ construction / saving
    @classmethod
    def from_model(
        cls,
        model_name_or_path: str | Path | ModelSettings,
        settings: GenerationSettings | None = None,
        *,
        seed: int = 0,
    ) -> VLMPolicy:
        """Load a model (path, hub id or :class:`ModelSettings`) and wrap it with a fresh value head.

        ``seed`` seeds the LoRA and value-head initialisation (the global torch RNG is left alone).
        """
        model_settings = (
            model_name_or_path
            if isinstance(model_name_or_path, ModelSettings)
            else ModelSettings(model_name_or_path=str(model_name_or_path))
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, processor = load_model_and_processor(model_settings)
            value_head = ValueHead(model.config.get_text_config().hidden_size)
        return cls(model, processor, value_head, settings, model_settings)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        base_model: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        is_trainable: bool = True,
    ) -> VLMPolicy:
        """Load a policy written by :meth:`save_pretrained` (adapter or full model + value head + processor).

        Args:
            directory: the saved policy.
            base_model: base model for an adapter checkpoint, overriding the one recorded there.
            device, dtype: override the recorded ones (e.g. "cpu", "float32").
            is_trainable: load LoRA weights as trainable.
        """
        directory = Path(directory)
        settings_path = directory / POLICY_SETTINGS_FILE
        if not settings_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved policy (no {POLICY_SETTINGS_FILE}); "
                "save one with VLMPolicy.save_pretrained, or load a plain model with VLMPolicy.from_model"
            )
        try:
            saved = json.loads(settings_path.read_text())
            generation = GenerationSettings(**saved["generation"])
            model_settings = ModelSettings(**saved["model"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{settings_path} is unreadable ({error}); re-save the policy") from error
        if device is not None:
            model_settings.device = device
        if dtype is not None:
            model_settings.dtype = dtype
        is_adapter = (directory / "adapter_config.json").is_file()
        if is_adapter:
            if base_model is not None:
                model_settings.model_name_or_path = str(base_model)
            model_settings.adapter_path = str(directory)
            model_settings.adapter_trainable = is_trainable
        else:
            model_settings.model_name_or_path = str(directory)
            model_settings.use_lora = False
        model, _ = load_model_and_processor(model_settings)
        processor = load_processor(directory)
        value_head = ValueHead.from_pretrained(directory)
        return cls(model, processor, value_head, generation, model_settings)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the adapter (or the full model), the value head, the processor and the settings."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        self.value_head.save_pretrained(directory)
        model_settings = self.model_settings or ModelSettings(
            model_name_or_path=str(self._base_model.config.name_or_path), use_lora=self.has_adapter
        )
        record = {"generation": asdict(self.settings), "model": model_settings.to_dict()}
        (directory / POLICY_SETTINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return directory

    # ------------------------------------------------------------------ properties
    @property
    def has_adapter(self) -> bool:
        """True when the model carries LoRA adapters (PEFT)."""
        return isinstance(self.model, PeftModel)

    @property
    def _base_model(self) -> PreTrainedModel:
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters PPO updates: trainable model weights (LoRA or all) and the value head."""
        model_params = [p for p in self.model.parameters() if p.requires_grad]
        return model_params + list(self.value_head.parameters())

    def train(self, mode: bool = True) -> VLMPolicy:
        """Set training mode (dropout) of model and value head."""
        self.model.train(mode)
        self.value_head.train(mode)
        return self

    def eval(self) -> VLMPolicy:
        """Set evaluation mode of model and value head."""
        return self.train(False)

    def _generation_config(self, **options: Any) -> GenerationConfig:
        """Generation config with ``options`` and every other logits processor neutral (see
        :func:`vlm_agent.sampler.neutral_generation_config`)."""
        return neutral_generation_config(
            self._base_model.generation_config,
            max_new_tokens=self.settings.max_new_tokens,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            **options,
        )

    # ------------------------------------------------------------------ acting
    def prepare_inputs(self, images: Sequence[ImageLike], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Processor inputs (left-padded) for N (image, prompt text) pairs, on the model's device."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one image per prompt")
        texts = [
            self.processor.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
            for prompt in prompts
        ]
        inputs = self.processor(images=[[image] for image in images], text=texts, return_tensors="pt", padding=True)
        return {name: value.to(self.device) for name, value in inputs.items()}

    def act(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[str],
        legal_actions: Sequence[Sequence[str]],
        *,
        invalid_policy: InvalidActionPolicy,
        rng: np.random.Generator,
        recompute_scores: bool = False,
    ) -> ActOutput:
        """Sample one answer per observation (all N at once), parse it, and score it.

        Args:
            images: N observations (uint8 ``[H, W, 3]`` arrays or PIL images).
            prompts: N rendered prompt texts (``prompt_for(env_id).render(...)``).
            legal_actions: N lists of legal action texts.
            invalid_policy: what an unparseable answer executes (see :mod:`vlm_agent.parsing`).
            rng: drives sampling (torch is seeded from it inside a forked RNG state) and the
                fallback for invalid answers, so equal generators give equal results.
            recompute_scores: score the answers with a second forward (:meth:`evaluate`) instead
                of taking the log-probs and values that generation measured on the way
                (:meth:`sample_scored`). Same numbers up to float rounding, several times slower
                at large batch; for verification.

        Runs under ``torch.no_grad()`` (not ``inference_mode``: the stored tensors may later meet
        autograd) with the model in eval mode (restored afterwards).
        """
        n = len(prompts)
        if len(legal_actions) != n:
            raise ValueError(f"got {n} prompts but {len(legal_actions)} legal-action lists")
        if any(len(legal) == 0 for legal in legal_actions):
            raise ValueError("every observation needs at least one legal action")
        inputs = self.prepare_inputs(images, prompts)
        was_training = self.model.training
        self.eval()
        try:
            with torch.no_grad():
                seed = int(rng.integers(0, 2**31 - 1))
                if recompute_scores:
                    samples, _ = self.sample(inputs, seed=seed, legal_actions=legal_actions)
                    scores = self.evaluate(samples)
                    log_probs, values = scores.log_probs, scores.values
                    for sample, log_prob, value in zip(samples, log_probs.tolist(), values.tolist(), strict=True):
                        sample.log_prob, sample.value = log_prob, value
                else:
                    samples, generation_scores = self.sample_scored(inputs, seed=seed, legal_actions=legal_actions)
                    log_probs, values = self.score_samples(samples, generation_scores)
        finally:
            self.train(was_training)

        texts, parsed, indices, invalid, adjustments = [], [], [], [], []
        for sample, legal in zip(samples, legal_actions, strict=True):
            text = self.processor.tokenizer.decode(sample.completion_ids.tolist(), skip_special_tokens=True)
            result = parse_action(text, list(legal))
            index, is_invalid, adjustment = resolve_action(result, list(legal), invalid_policy, rng)
            texts.append(text)
            parsed.append(result)
            indices.append(int(index))
            invalid.append(bool(is_invalid))
            adjustments.append(float(adjustment))
        return ActOutput(
            texts=texts,
            parsed=parsed,
            action_indices=indices,
            invalid=invalid,
            reward_adjustments=adjustments,
            log_probs=log_probs.detach().cpu(),
            values=values.detach().cpu(),
            samples=samples,
        )

    def sample(
        self,
        inputs: dict[str, torch.Tensor],
        *,
        seed: int,
        legal_actions: Sequence[Sequence[str]],
        output_scores: bool = False,
    ) -> tuple[list[PolicySample], torch.Tensor | None]:
        """Generate one answer per row of ``inputs`` (from :meth:`prepare_inputs`) and store them.

        ``legal_actions`` (one list per row) is what each answer is parsed against to split its
        thought and action masks (:func:`vlm_agent.log_probs.thought_action_masks`).

        Sampling is seeded with ``seed`` inside a forked RNG state (the global torch RNG is left
        as it was). Returns the samples (``log_prob``/``value`` still NaN: :meth:`act` fills them)
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
        :func:`vlm_agent.log_probs.cot_scaled_log_prob` over each answer's thought and action masks,
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
            token_log_probs, thought.to(device), action.to(device), self.settings.cot_scale
        ).cpu()
        values = self.value_head(scores.prompt_hidden.to(self.device)).cpu()
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
        cuda_index = self.device.index if self.device.index is not None else 0
        devices = [cuda_index] if self.device.type == "cuda" else []
        scorer = ScoringLogitsProcessor(self.settings.temperature, self.suppressed_token_ids, self.device)
        prompt_length = inputs["input_ids"].shape[1]
        if len(legal_actions) != inputs["input_ids"].shape[0]:
            raise ValueError(f"got {inputs['input_ids'].shape[0]} prompts but {len(legal_actions)} legal-action lists")
        with torch.random.fork_rng(devices=devices), self._prompt_hidden_hook(capture_prompt_hidden) as captured:
            torch.manual_seed(seed)
            # Greedy over the scorer's output is a draw from the policy (see ScoringLogitsProcessor).
            sequences = self.model.generate(
                **inputs,
                generation_config=self._generation_config(
                    do_sample=False, **GREEDY_SAMPLING_OPTIONS, disable_compile=True
                ),
                logits_processor=LogitsProcessorList([scorer]),
                cache=self.make_kv_cache(prompt_length + self.settings.max_new_tokens),
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
                "(chunked prefill?), so it gives no value estimate; act with recompute_scores=True"
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
        if self.settings.kv_cache == "static":
            return StaticCache(config=self._base_model.config, max_cache_len=max_length)
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

        handle = self._base_model.get_decoder().register_forward_hook(keep_first)
        try:
            yield captured
        finally:
            handle.remove()

    def _split_samples(
        self, inputs: dict[str, torch.Tensor], completions: torch.Tensor, legal_actions: Sequence[Sequence[str]]
    ) -> list[PolicySample]:
        """Cut a generated batch into per-observation CPU records (padding removed, EOS kept); the
        thought/action masks split each answer where the parser, reading it against its row's
        legal actions, finds the action."""
        attention = inputs["attention_mask"].bool().cpu()
        image_inputs = split_image_inputs(
            {k: v for k, v in inputs.items() if k not in PER_TOKEN_KEYS and k != "input_ids"}, len(completions)
        )
        eos = torch.as_tensor(self.eos_token_ids)
        samples = []
        for row, (completion, legal) in enumerate(zip(completions.cpu(), legal_actions, strict=True)):
            is_eos = torch.isin(completion, eos).nonzero()
            length = int(is_eos[0]) + 1 if len(is_eos) else len(completion)
            completion_ids = completion[:length].clone()
            thought, action = thought_action_masks(self.processor.tokenizer, completion_ids.tolist(), list(legal))
            keep = attention[row]
            samples.append(
                PolicySample(
                    prompt_ids=inputs["input_ids"][row].cpu()[keep].clone(),
                    prompt_token_inputs={
                        k: inputs[k][row].cpu()[keep].clone()
                        for k in PER_TOKEN_KEYS
                        if k in inputs and k != "attention_mask"
                    },
                    image_inputs=image_inputs[row],
                    completion_ids=completion_ids,
                    thought_mask=thought,
                    action_mask=action,
                    log_prob=float("nan"),
                    value=float("nan"),
                )
            )
        return samples

    # ------------------------------------------------------------------ scoring
    def collate(self, samples: Sequence[PolicySample]) -> CollatedBatch:
        """Pad stored samples into one forward's inputs (see :func:`vlm_agent.batching.collate_samples`)."""
        return collate_samples(samples, self.pad_token_id)

    def evaluate(self, samples: Sequence[PolicySample], *, with_reference: bool = False) -> EvaluateOutput:
        """Score stored samples in one forward: CoT-scaled log-probs, values, entropies.

        Gradients flow when called outside ``torch.no_grad()``. The model's train/eval mode is
        left as it is; :class:`~vlm_agent.ppo_trainer.VLMPPOTrainer` switches every dropout off, so
        that train mode (gradient checkpointing) and eval mode (acting) give the same scores. ``with_reference`` adds the
        log-probs of the base model, obtained by disabling the LoRA adapter (no second model);
        it needs an adapter.
        """
        batch = self.collate(samples)
        inputs = {k: v.to(self.device) for k, v in batch.model_inputs.items()}
        completion_ids = batch.completion_ids.to(self.device)
        completion_mask = batch.completion_mask.to(self.device)
        thought_mask = batch.thought_mask.to(self.device)
        action_mask = batch.action_mask.to(self.device)

        def score() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            """(per-token log-probs, per-token entropy, CoT-scaled sum, prompt hidden state)."""
            logits, prompt_hidden = self._forward(inputs, batch.prompt_length, completion_ids.shape[1])
            tokens, entropy = token_log_probs_and_entropy(
                logits,
                completion_ids,
                completion_mask,
                temperature=self.settings.temperature,
                suppressed_token_ids=self.suppressed_token_ids,
            )
            return tokens, entropy, cot_scaled_log_prob(tokens, thought_mask, action_mask, self.settings.cot_scale), prompt_hidden

        token_log_probs, entropy, log_probs, prompt_hidden = score()
        values = self.value_head(prompt_hidden)
        counts = completion_mask.sum(-1).clamp(min=1)
        mean_entropy = entropy.sum(-1) / counts

        ref_log_probs = None
        if with_reference:
            if not self.has_adapter:
                raise ValueError(
                    "reference log-probs come from disabling the LoRA adapter, but this model has none; "
                    "load it with use_lora=True or set the KL coefficient to 0"
                )
            with torch.no_grad(), self.model.disable_adapter():
                ref_log_probs = score()[2]
        return EvaluateOutput(
            log_probs=log_probs,
            values=values,
            entropy=mean_entropy,
            token_log_probs=token_log_probs,
            completion_mask=completion_mask,
            ref_log_probs=ref_log_probs,
        )

    def state_values(self, images: Sequence[ImageLike], prompts: Sequence[str]) -> torch.Tensor:
        """Value estimates ``[N]`` (CPU) of N observations from one forward over the prompts alone.

        For bootstrapping GAE at the end of a rollout: the same hidden state (last prompt token) as
        :meth:`evaluate`, without generating an answer. Runs under ``no_grad`` in eval mode.
        """
        inputs = self.prepare_inputs(images, prompts)
        was_training = self.model.training
        self.eval()
        try:
            with torch.no_grad():
                outputs = self._model_outputs(inputs, logits_to_keep=1)
                values = self.value_head(outputs.hidden_states[-1][:, -1])
        finally:
            self.train(was_training)
        return values.detach().cpu()

    def _model_outputs(self, inputs: dict[str, torch.Tensor], *, logits_to_keep: int) -> Any:
        """One forward with hidden states, positions as in generation (see :func:`uses_multimodal_rope`)."""
        if not self.multimodal_rope:
            positions = inputs["attention_mask"].long().cumsum(-1) - 1
            inputs = {**inputs, "position_ids": positions.clamp(min=0)}
        return self.model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=logits_to_keep)

    def _forward(
        self, inputs: dict[str, torch.Tensor], prompt_length: int, completion_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits predicting each completion token ``[B, C, V]`` and the last prompt token's hidden state."""
        outputs = self._model_outputs(inputs, logits_to_keep=completion_length + 1)
        logits = outputs.logits[:, :-1]
        prompt_hidden = outputs.hidden_states[-1][:, prompt_length - 1]
        return logits, prompt_hidden
