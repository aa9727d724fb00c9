"""A local Hugging Face vision-language model as an evaluation agent.

Wraps :class:`vlm_agent.models.policy.VLMPolicy` (sampling through :class:`vlm_agent.rollout.engine.HFEngine`), the policy the trainer optimises, so that a trained
checkpoint, its SFT starting point and any image-text-to-text model folder are evaluated by the
same loop, prompts and parser as the API baselines. Only sampling is used: no value head, no
log-probabilities.

This module imports torch; :mod:`vlm_agent.agents` imports it only for ``local:`` methods.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlm_agent.agents.settings import AgentSettings, read_agent_settings
from vlm_agent.models.loading import ModelSettings
from vlm_agent.models.policy import POLICY_SETTINGS_FILE, VLMPolicy
from vlm_agent.models.settings import GenerationSettings
from vlm_agent.rollout.agent import AgentInput, TokenUsage
from vlm_agent.rollout.engine import HFEngine


class LocalHFAgent:
    """Answers with a :class:`VLMPolicy`'s sampled text, one generate call per batch.

    Args:
        policy: The policy to sample from; its :class:`GenerationSettings` decide temperature
            and answer length.
        name: Row name in result tables.
        seed: Seed of the per-batch sampling seeds: equal seeds, equal answers.

    Example::

        agent = LocalHFAgent.from_pretrained("runs/numberline/checkpoint-final")
        result = evaluate_agent(agent, "gym_cards/NumberLine-v0", episodes=100, seed=0, num_envs=8)
    """

    uses_expert_action = False

    def __init__(self, policy: VLMPolicy, *, name: str = "local", seed: int = 0) -> None:
        self.policy = policy
        self.name = name
        self._rng = np.random.default_rng(seed)
        self.engine = HFEngine(policy, self._rng, name=name)
        self._usage = TokenUsage()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, temperature: float | None = None,
                        max_new_tokens: int | None = None, seed: int = 0,
                        device: str | None = None) -> LocalHFAgent:
        """Load a saved policy (``VLMPolicy.save_pretrained``) or a plain model folder.

        Args:
            path: A folder with ``policy_settings.json`` (a trained policy) or any
                image-text-to-text model folder with its processor (an SFT warm start).
            temperature: Sampling temperature (> 0); None: the saved policy's, else the paper's 0.2.
            max_new_tokens: Answer length limit; None: the saved policy's, else the paper's 256.
            seed: Sampling seed.
            device: "cpu", "cuda", ...; None keeps the saved or automatic choice.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"local model {str(path)!r} is not a folder; pass a saved policy "
                "(VLMPolicy.save_pretrained) or a Hugging Face model folder, e.g. local:runs/ckpt"
            )
        if (folder / POLICY_SETTINGS_FILE).is_file():
            policy = VLMPolicy.from_pretrained(folder, device=device, is_trainable=False)
            saved = policy.settings
            policy.settings = GenerationSettings(
                temperature=saved.temperature if temperature is None else temperature,
                max_new_tokens=saved.max_new_tokens if max_new_tokens is None else max_new_tokens,
                cot_scale=saved.cot_scale, kv_cache=saved.kv_cache,
            )
        else:
            settings = GenerationSettings(temperature=0.2 if temperature is None else temperature,
                                          max_new_tokens=256 if max_new_tokens is None else max_new_tokens)
            model_settings = ModelSettings(model_name_or_path=str(folder), use_lora=False,
                                           device=device or "auto")
            policy = VLMPolicy.from_model(model_settings, settings, seed=seed)
        return cls(policy.eval(), name=f"local:{folder.name}", seed=seed)

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        """Sample one answer per input in one batched generate call."""
        if not inputs:
            return []
        model_inputs = self.policy.prepare_inputs([agent_input.image for agent_input in inputs],
                                                  [agent_input.prompt for agent_input in inputs])
        with torch.no_grad():
            samples, _ = self.engine.sample(model_inputs, seed=int(self._rng.integers(0, 2**31 - 1)),
                                            legal_actions=[agent_input.legal_actions for agent_input in inputs])
        self._usage = self._usage + TokenUsage(
            prompt_tokens=sum(int(sample.prompt_ids.numel()) for sample in samples),
            completion_tokens=sum(int(sample.completion_ids.numel()) for sample in samples),
            requests=len(inputs),
        )
        return [sample.text for sample in samples]

    def usage(self) -> TokenUsage:
        """Tokens read and generated so far (counted locally; nothing is billed)."""
        return self._usage

    def close(self) -> None:
        """Nothing to release; the model is freed with the agent."""


def saved_settings(folder: str | Path) -> AgentSettings | None:
    """The play settings a model folder recorded: ``agent_settings.json``, completed by the
    sampling settings of ``policy_settings.json`` (policies saved before ``agent_settings.json``
    existed record only those). None where the folder records neither.
    """
    folder = Path(folder)
    settings = read_agent_settings(folder)
    policy_file = folder / POLICY_SETTINGS_FILE
    if policy_file.is_file():
        try:
            generation = json.loads(policy_file.read_text(encoding="utf-8"))["generation"]
            recorded = AgentSettings(temperature=float(generation["temperature"]),
                                     max_new_tokens=int(generation["max_new_tokens"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{policy_file} is unreadable ({error}); re-save the policy") from None
        settings = recorded.overridden_by(settings or AgentSettings())
    return settings
