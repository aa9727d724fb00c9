"""A Hugging Face vision-language model as an RL policy with a value head: loading, saving, scoring.

The loop this module serves: the rollout engine (:class:`vlm_agent.rollout.engine.HFEngine`)
samples answers from :attr:`VLMPolicy.model` and stores them as
:class:`~vlm_agent.models.batching.PolicySample`; the update re-scores the stored token ids with
gradients (:meth:`VLMPolicy.evaluate`), and :meth:`VLMPolicy.state_values` bootstraps GAE.

Its parts: :mod:`vlm_agent.models.sampler` (the sampling distribution and the generation config
that keeps it), :mod:`vlm_agent.models.batching` (the stored sample and how a mini-batch of them is
padded back into model inputs); this module holds the model-facing policy itself.

Log-probabilities are the CoT-scaled ones of :mod:`vlm_agent.algorithms.cot_log_prob`, taken at the
sampling temperature (logits / T) with the same special tokens suppressed as during sampling.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from vlm_agent.algorithms.cot_log_prob import (
    cot_scaled_log_prob,
    token_log_probs_and_entropy,
)
from vlm_agent.models.batching import (
    CollatedBatch,
    PolicySample,
    collate_samples,
)
from vlm_agent.models.loading import (
    ModelSettings,
    load_model_and_processor,
    load_processor,
)
from vlm_agent.models.sampler import (
    _eos_token_ids,
    suppressed_special_ids,
)
from vlm_agent.models.settings import GenerationSettings
from vlm_agent.models.value_head import VALUE_HEAD_WEIGHTS, ValueHead
from vlm_agent.prompting.templates import chat_messages

#: Settings file written next to the adapter by :meth:`VLMPolicy.save_pretrained`.
POLICY_SETTINGS_FILE = "policy_settings.json"

ImageLike = np.ndarray | Image.Image


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
        value_head: the critic; a fresh :class:`ValueHead` sized to the model when None (and ``critic``).
        critic: False builds no value head (the critic-free algorithms): values are 0.
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
        *,
        critic: bool = True,
    ) -> None:
        self.model = model
        self.processor = processor
        self.settings = settings or GenerationSettings()
        self.model_settings = model_settings
        hidden_size = model.config.get_text_config().hidden_size
        if value_head is None and critic:
            value_head = ValueHead(hidden_size)
        self.value_head = value_head
        self.device = next(model.parameters()).device
        if self.value_head is not None:
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
        critic: bool = True,
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
            value_head = ValueHead(model.config.get_text_config().hidden_size) if critic else None
        return cls(model, processor, value_head, settings, model_settings, critic=critic)

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
            recorded = Path(model_settings.model_name_or_path)
            if base_model is not None:
                model_settings.model_name_or_path = str(base_model)
            elif not recorded.is_absolute() and (directory / recorded).is_dir():  # relative to this folder
                model_settings.model_name_or_path = str(directory / recorded)
            model_settings.adapter_path = str(directory)
            model_settings.adapter_trainable = is_trainable
        else:
            model_settings.model_name_or_path = str(directory)
            model_settings.use_lora = False
        model, _ = load_model_and_processor(model_settings)
        processor = load_processor(directory)
        critic = (directory / VALUE_HEAD_WEIGHTS).is_file()  # a critic-free run saved none
        value_head = ValueHead.from_pretrained(directory) if critic else None
        return cls(model, processor, value_head, generation, model_settings, critic=critic)

    def save_pretrained(self, directory: str | Path, *, base_within: str | Path | None = None) -> Path:
        """Write the adapter (or the full model), the value head, the processor and the settings.

        `base_within`: a folder (a training run's) whose base model is recorded relative to `directory`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        if self.value_head is not None:
            self.value_head.save_pretrained(directory)
        model_settings = self.model_settings or ModelSettings(
            model_name_or_path=str(self._base_model.config.name_or_path), use_lora=self.has_adapter
        )
        record = {"generation": asdict(self.settings), "model": model_settings.to_dict()}
        base = Path(model_settings.model_name_or_path)
        if base.is_dir():
            # A base model inside `base_within` (the run folder, which holds the demo's base_model) is
            # recorded relative to this folder, so it is found when the run moves; any other local
            # one absolute, so it is found from any working directory.
            resolved = base.resolve()
            inside = base_within is not None and Path(base_within).resolve() in resolved.parents
            record["model"]["model_name_or_path"] = (
                os.path.relpath(resolved, directory.resolve()) if inside else str(resolved))
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
        return model_params + (list(self.value_head.parameters()) if self.value_head is not None else [])

    def train(self, mode: bool = True) -> VLMPolicy:
        """Set training mode (dropout) of model and value head."""
        self.model.train(mode)
        if self.value_head is not None:
            self.value_head.train(mode)
        return self

    def eval(self) -> VLMPolicy:
        """Set evaluation mode of model and value head."""
        return self.train(False)


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


    # ------------------------------------------------------------------ scoring
    def collate(self, samples: Sequence[PolicySample]) -> CollatedBatch:
        """Pad stored samples into one forward's inputs (see :func:`vlm_agent.models.batching.collate_samples`)."""
        return collate_samples(samples, self.pad_token_id)

    def evaluate(self, samples: Sequence[PolicySample], *, with_reference: bool = False) -> EvaluateOutput:
        """Score stored samples in one forward: CoT-scaled log-probs, values, entropies.

        Gradients flow when called outside ``torch.no_grad()``. The model's train/eval mode is
        left as it is; :class:`~vlm_agent.training.ppo_trainer.VLMPPOTrainer` switches every dropout off, so
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

        ref_log_probs = None
        if with_reference:
            # First: a reference that swaps weights in place must do so before the graph below records them.
            with torch.no_grad(), self.reference():
                ref_log_probs = score()[2]
        token_log_probs, entropy, log_probs, prompt_hidden = score()
        values = self.values_of(prompt_hidden)
        counts = completion_mask.sum(-1).clamp(min=1)
        mean_entropy = entropy.sum(-1) / counts
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
                values = self.values_of(outputs.hidden_states[-1][:, -1])
        finally:
            self.train(was_training)
        return values.detach().cpu()

    def keep_reference(self) -> None:
        """Remember the trainable weights as they are now: the reference policy of a KL term for a
        model without LoRA (with LoRA the reference is the model with its adapter disabled, free).

        Costs one copy of the trainable weights in memory, and two copies of them per reference
        forward (swapped in, then back).
        """
        self._reference_state = {name: parameter.detach().clone() for name, parameter in self.model.named_parameters()
                                 if parameter.requires_grad}

    @contextmanager
    def reference(self) -> Iterator[None]:
        """While active, the model is the reference policy: its adapter disabled (LoRA), or its trainable
        weights swapped for those :meth:`keep_reference` remembered."""
        if self.has_adapter:
            with self.model.disable_adapter():
                yield
            return
        saved = getattr(self, "_reference_state", None)
        if saved is None:
            raise ValueError(
                "reference log-probs need LoRA (the adapter disabled is the reference) or keep_reference() "
                "called before training; or set the KL coefficient to 0"
            )
        parameters = dict(self.model.named_parameters())
        current = {name: parameters[name].detach().clone() for name in saved}
        try:
            with torch.no_grad():
                for name, value in saved.items():
                    parameters[name].copy_(value)
            yield
        finally:
            with torch.no_grad():
                for name, value in current.items():
                    parameters[name].copy_(value)

    def values_of(self, prompt_hidden: torch.Tensor) -> torch.Tensor:
        """The value head on the last prompt token's hidden state ``[N, H]`` -> ``[N]`` (zeros without a critic)."""
        if self.value_head is None:
            return torch.zeros(prompt_hidden.shape[0], device=prompt_hidden.device)
        return self.value_head(prompt_hidden.to(self.device))

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
