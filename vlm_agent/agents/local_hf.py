"""A local Hugging Face vision-language model as an evaluation agent.

Wraps :class:`vlm_agent.models.policy.VLMPolicy` (sampling through :class:`vlm_agent.rollout.engine.HFEngine`), the policy the trainer optimises, so that a trained
checkpoint, its SFT starting point and any image-text-to-text model folder are evaluated by the
same loop, prompts and parser as the API baselines. Only sampling is used: no value head, no
log-probabilities.

This module imports torch; :mod:`vlm_agent.agents` imports it only for ``local:`` methods.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlm_agent.agents.settings import AgentSettings, read_agent_settings
from vlm_agent.models.loading import ModelSettings
from vlm_agent.models.policy import POLICY_SETTINGS_FILE, VLMPolicy
from vlm_agent.models.settings import GenerationSettings
from vlm_agent.rollout.agent import AgentInput, TokenUsage
from vlm_agent.rollout.engine import HFEngine
from vlm_agent.rollout.vllm_engine import VLLMEngine
from vlm_agent.rollout.vllm_server import VLLMServerSettings, max_lora_rank, server_env, vllm_python


@dataclass(frozen=True)
class VLLMOptions:
    """Sample on a vLLM server instead of in-process (``vlm-agent eval --rollout_engine vllm``).

    Attributes:
        url: A running server serving the policy's base model; None starts a local one.
        python: The vLLM venv's Python for a local server (see :func:`vllm_python`).
        server_args: More flags for a local server.
    """

    url: str | None = None
    python: str | None = None
    server_args: str = ""


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

    def __init__(self, policy: VLMPolicy, *, name: str = "local", seed: int = 0, vllm: VLLMOptions | None = None) -> None:
        self.policy = policy
        self.name = name
        self._rng = np.random.default_rng(seed)
        self.engine = HFEngine(policy, self._rng, name=name)
        self._usage = TokenUsage()
        self._adapters: tempfile.TemporaryDirectory[str] | None = None
        self.vllm_engine: VLLMEngine | None = None
        if vllm is not None:
            # The saved adapter is loaded into the server; a plain model folder is sampled as served.
            base = str((policy.model_settings.model_name_or_path if policy.model_settings else None)
                       or policy._base_model.config.name_or_path)
            server = None if vllm.url else VLLMServerSettings(
                model=base, python=vllm_python(vllm.python), extra_args=vllm.server_args, env=server_env(),
                max_lora_rank=max_lora_rank(policy.model_settings.lora_r if policy.model_settings else 8),
                dtype=policy.model_settings.dtype if policy.model_settings else "auto")
            self._adapters = tempfile.TemporaryDirectory(prefix="vlm_agent_eval_adapters_")
            self.vllm_engine = VLLMEngine(policy, self._rng, adapter_dir=self._adapters.name, model=base, url=vllm.url,
                                          server=server, name=name.replace(":", "-"), score=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, temperature: float | None = None,
                        max_new_tokens: int | None = None, seed: int = 0,
                        device: str | None = None, vllm: VLLMOptions | None = None) -> LocalHFAgent:
        """Load a saved policy (``VLMPolicy.save_pretrained``) or a plain model folder.

        Args:
            path: A folder with ``policy_settings.json`` (a trained policy) or any
                image-text-to-text model folder with its processor (an SFT warm start).
            temperature: Sampling temperature (> 0); None: the saved policy's, else the paper's 0.2.
            max_new_tokens: Answer length limit; None: the saved policy's, else the paper's 256.
            seed: Sampling seed.
            device: "cpu", "cuda", ...; None keeps the saved or automatic choice.
            vllm: Sample on a vLLM server (the policy is still loaded here: its adapter is what the
                server loads, its processor renders the prompts).
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
        return cls(policy.eval(), name=f"local:{folder.name}", seed=seed, vllm=vllm)

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        """Sample one answer per input in one batched generate call."""
        if not inputs:
            return []
        if self.vllm_engine is not None:
            return [sample.text for sample in self.vllm_engine.respond(inputs)]
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
        return self.vllm_engine.usage() if self.vllm_engine is not None else self._usage

    def close(self) -> None:
        """Stop a vLLM server started for this agent; the model is freed with the agent."""
        if self.vllm_engine is not None:
            self.vllm_engine.close()
        if self._adapters is not None:
            self._adapters.cleanup()
            self._adapters = None



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
