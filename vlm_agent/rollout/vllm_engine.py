"""The vLLM rollout engine: sampling on an OpenAI-compatible vLLM server, scoring in the trainer.

:class:`VLLMEngine` is a rollout engine (:mod:`vlm_agent.rollout.engine`) like the in-process
:class:`~vlm_agent.rollout.engine.HFEngine`, so the one loop plays it unchanged. Each step it sends
every observation to the server as one chat request (the image as a PNG data URL, the same chat
messages the trainer's processor renders), sampling at the run's temperature with the special
tokens suppressed, seeded from the run's generator, and asks for the sampled **token ids**, the
prompt's token ids and each token's log-prob at that temperature (the server runs with
``--logprobs-mode processed_logprobs``). Nothing is re-tokenized from decoded text: the prompt ids
the server saw must equal the trainer's (a mismatch stops the run with one line) and the trainer
scores the very completion ids the server sampled.

The trainer's own forward over those ids then gives each answer's value and its exact old
log-prob (what PPO stores by default); the engine's log-probs are kept next to them
(``PolicySample.engine_log_prob`` and per token), for the per-update mismatch and for
``--old_log_probs engine_tis`` (:mod:`vlm_agent.algorithms.engine_mismatch`).

Weights follow training: before sampling, when the policy's trainable (LoRA) weights changed since
the last sync (an optimizer step, a checkpoint loaded), the adapter is saved and loaded into the
server under a new name, and the old one is unloaded. Full-parameter training is refused: syncing
whole weights is out of scope.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlm_agent.algorithms.cot_log_prob import cot_scaled_log_prob
from vlm_agent.models.batching import PolicySample
from vlm_agent.models.policy import ImageLike, VLMPolicy
from vlm_agent.prompting.templates import chat_messages
from vlm_agent.rollout.agent import AgentInput, TokenUsage
from vlm_agent.rollout.engine import samples_from_answers
from vlm_agent.rollout.vllm_server import VLLMClient, VLLMError, VLLMServer, VLLMServerSettings

#: vLLM clamps a logit bias to [-100, 100]; at temperature T the token keeps probability ~exp(-100 / T).
SUPPRESSING_BIAS = -100.0


class VLLMEngine:
    """A :class:`VLMPolicy` sampling on a vLLM server and scored by its own forward (an :class:`Agent`).

    Args:
        policy: The policy being trained; it must carry a LoRA adapter.
        rng: Draws each batch's seed (request ``i`` is seeded ``seed + i``), so equal generators give
            equal samples from the same server.
        adapter_dir: Where each synced adapter is written (the server must see this folder).
        url: A running server (``http://host:port``); None starts a local one with ``server``.
        server: How to start the local server (its ``model`` is the policy's base model).
        model: The base model the server must serve (a path or hub id), checked at connection.
        name: Row name, as an agent.
        score: Run the trainer's forward over each answer (training). False (evaluation) leaves
            ``log_prob``/``value`` NaN, and allows a policy without an adapter: the served model itself.
    """

    uses_expert_action = False

    def __init__(self, policy: VLMPolicy, rng: np.random.Generator, *, adapter_dir: str | Path, model: str,
                 url: str | None = None, server: VLLMServerSettings | None = None, name: str = "vllm",
                 score: bool = True) -> None:
        if not policy.has_adapter and score:
            raise VLLMError("the vLLM engine syncs LoRA adapters only: full-parameter weight sync is not supported; "
                            "train with --use_lora True, or use --rollout_engine hf")
        outside = sorted({name.split(".lora_")[0] for name, _ in policy.model.named_parameters()
                          if ".lora_" in name and ".language_model." not in name})
        if outside:
            raise VLLMError(f"vLLM applies LoRA to the language model only, but the adapter also covers {outside[0]}; "
                            "name the language model's layers in --lora_target_modules")
        if url is None and server is None:
            raise ValueError("VLLMEngine needs a server url or the settings to start one")
        self.policy = policy
        self.rng = rng
        self.name = name
        self.adapter_dir = Path(adapter_dir)
        self.model = model
        self.url = url
        self.server_settings = server
        self.score = score
        self.generation_seconds = 0.0
        self._usage = TokenUsage()
        self._server: VLLMServer | None = None
        self._client: VLLMClient | None = None
        self._base_name: str | None = None  # the base model's served name, once connected
        self._pool: ThreadPoolExecutor | None = None
        self._adapter: tuple[str, Path] | None = None  # (served name, folder) in use
        self._synced_version: int | None = None
        self._syncs = 0
        self._run_tag = f"{os.getpid()}-{time.time_ns() % 10**9}"  # adapter names unique on a shared server

    # ------------------------------------------------------------------ as an agent
    def respond(self, inputs: Sequence[AgentInput]) -> list[PolicySample]:
        """Sample and score one answer per input (see :meth:`generate`)."""
        return self.generate([i.image for i in inputs], [i.prompt for i in inputs], [i.legal_actions for i in inputs])

    def usage(self) -> TokenUsage:
        """Tokens read and generated so far, as the server counted them."""
        return self._usage

    def close(self) -> None:
        """Unload the adapter, stop a server this engine started (its whole process group) and the
        request threads; the engine reconnects (and restarts its server) if used again."""
        try:
            if self._adapter is not None and self._server is None and self._client is not None:
                self._client.unload_adapter(self._adapter[0])
        except VLLMError:
            pass  # a remote server that went away: nothing to unload
        finally:
            if self._server is not None:
                self._server.stop()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._adapter is not None:
                shutil.rmtree(self._adapter[1], ignore_errors=True)
                if self.adapter_dir.is_dir() and not any(self.adapter_dir.iterdir()):
                    self.adapter_dir.rmdir()
            self._server = self._client = self._pool = self._adapter = self._synced_version = None

    # ------------------------------------------------------------------ server and weights
    def connect(self) -> VLLMClient:
        """The server's client: the one at ``url`` (checked to serve ``model``), or a local one started now."""
        if self._client is None:
            served_as = [self.model]
            if self.url is None:
                assert self.server_settings is not None
                self._server = VLLMServer(self.server_settings)
                client = self._server.start()
                served_as.append(str(client.served_models()[0].get("root", "")))  # possibly a view of the model
            else:
                client = VLLMClient(self.url)
            self._base_name = client.base_model(self.model, also=served_as)
            self._client = client
            self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="vllm-request")
        return self._client

    def weights_version(self) -> int:
        """Changes whenever a trainable weight is modified in place (torch's per-tensor version counters)."""
        return sum(p._version for p in self.policy.model.parameters() if p.requires_grad)

    def sync_weights(self) -> str:
        """Load the policy's adapter into the server if its weights changed since the last sync; the
        served name to sample from."""
        client = self.connect()
        if not self.policy.has_adapter:
            assert self._base_name is not None
            return self._base_name
        version = self.weights_version()
        if self._adapter is not None and version == self._synced_version:
            return self._adapter[0]
        self._syncs += 1
        name = f"{self.name}-{self._run_tag}-{self._syncs}"
        folder = self.adapter_dir / name
        self.policy.model.save_pretrained(folder)
        try:
            client.load_adapter(name, folder)
        except VLLMError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        previous, self._adapter, self._synced_version = self._adapter, (name, folder), version
        if previous is not None:
            client.unload_adapter(previous[0])
            shutil.rmtree(previous[1], ignore_errors=True)
        return name

    # ------------------------------------------------------------------ generate + score
    def generate(self, images: Sequence[ImageLike], prompts: Sequence[str],
                 legal_actions: Sequence[Sequence[str]]) -> list[PolicySample]:
        """Sample one answer per observation on the server, then score them with the trainer's forward.

        Each returned sample holds the server's sampled token ids, ``log_prob`` and ``value`` from
        the trainer's forward (no gradients, eval mode), and the engine's own log-probs.

        Raises:
            VLLMError: Server unreachable or refusing, malformed answer, or prompt ids that differ
                from the trainer's.
        """
        n = len(prompts)
        if len(legal_actions) != n or len(images) != n:
            raise ValueError(f"got {n} prompts, {len(images)} images and {len(legal_actions)} legal-action lists")
        started = time.perf_counter()
        model = self.sync_weights()
        seed = int(self.rng.integers(0, 2**31 - 1))
        bodies = [self._request(model, image, prompt, seed + row) for row, (image, prompt) in enumerate(zip(images, prompts))]
        assert self._pool is not None and self._client is not None
        client = self._client
        answers = list(self._pool.map(lambda body: client.request("/v1/chat/completions", body), bodies))
        inputs = self.policy.prepare_inputs(images, prompts)
        parsed = [self._parse(answer, client.url) for answer in answers]
        self._check_prompts(inputs, [prompt_ids for prompt_ids, _, _ in parsed])
        completions = [torch.tensor(ids, dtype=torch.long) for _, ids, _ in parsed]
        samples = samples_from_answers(self.policy, inputs, completions, legal_actions)
        if self.score:
            self._score(samples, [torch.tensor(log_probs, dtype=torch.float32) for _, _, log_probs in parsed])
        self.generation_seconds += time.perf_counter() - started
        prompt_tokens = sum(len(ids) for ids, _, _ in parsed)
        self._usage = self._usage + TokenUsage(prompt_tokens=prompt_tokens,
                                               completion_tokens=sum(len(ids) for ids in completions), requests=n)
        return samples

    def _request(self, model: str, image: ImageLike, prompt: str, seed: int) -> dict[str, Any]:
        """One chat request: the trainer's chat messages with the image inline, the trainer's sampler."""
        settings = self.policy.settings
        messages = chat_messages(prompt)
        url = _png_data_url(image)
        for message in messages:
            message["content"] = [{"type": "image_url", "image_url": {"url": url}} if part.get("type") == "image"
                                  else part for part in message["content"]]
        return {
            "model": model, "messages": messages, "temperature": settings.temperature, "top_p": 1.0, "min_p": 0.0,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "max_tokens": settings.max_new_tokens, "seed": seed, "logprobs": True, "top_logprobs": 0,
            "return_token_ids": True, "stop_token_ids": list(self.policy.eos_token_ids),
            "logit_bias": {str(token): SUPPRESSING_BIAS for token in self.policy.suppressed_token_ids},
            "skip_special_tokens": False,
        }

    @staticmethod
    def _parse(answer: Any, url: str) -> tuple[list[int], list[int], list[float]]:
        """(prompt ids, sampled ids, their log-probs) of one chat answer."""
        try:
            choice = answer["choices"][0]
            ids = [int(token) for token in choice["token_ids"]]
            log_probs = [float(entry["logprob"]) for entry in choice["logprobs"]["content"]]
            prompt_ids = [int(token) for token in answer["prompt_token_ids"]]
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise VLLMError(f"vLLM server {url} answered malformed JSON: no token ids and log-probs "
                            f"({type(error).__name__}: {error}); is it vLLM >= 0.11?") from None
        if len(ids) != len(log_probs):
            raise VLLMError(f"vLLM server {url} answered {len(ids)} token ids but {len(log_probs)} log-probs")
        return prompt_ids, ids, log_probs

    @staticmethod
    def _check_prompts(inputs: dict[str, torch.Tensor], served: list[list[int]]) -> None:
        attention = inputs["attention_mask"].bool().cpu()
        for row, prompt_ids in enumerate(served):
            ours = inputs["input_ids"][row].cpu()[attention[row]].tolist()
            if ours != prompt_ids:
                at = next((i for i, (a, b) in enumerate(zip(ours, prompt_ids)) if a != b), min(len(ours), len(prompt_ids)))
                raise VLLMError(
                    f"the vLLM server tokenized prompt {row} differently from the trainer ({len(prompt_ids)} vs "
                    f"{len(ours)} tokens, first difference at {at}): serve the run's own model folder"
                )

    def _score(self, samples: list[PolicySample], engine_token_log_probs: list[torch.Tensor]) -> None:
        """The trainer's forward over the sampled ids: ``log_prob``, ``value`` and per-token log-probs."""
        was_training = self.policy.model.training
        self.policy.eval()
        try:
            with torch.no_grad():
                scores = self.policy.evaluate(samples)
        finally:
            self.policy.train(was_training)
        cot_scale = self.policy.settings.cot_scale
        for row, (sample, engine) in enumerate(zip(samples, engine_token_log_probs, strict=True)):
            length = len(sample.completion_ids)
            sample.log_prob = float(scores.log_probs[row])
            sample.value = float(scores.values[row])
            sample.trainer_token_log_probs = scores.token_log_probs[row, :length].detach().float().cpu()
            sample.engine_token_log_probs = engine
            sample.engine_log_prob = float(cot_scaled_log_prob(engine[None], sample.thought_mask[None],
                                                               sample.action_mask[None], cot_scale)[0])


def _png_data_url(image: ImageLike) -> str:
    """The image as a lossless PNG ``data:`` URL."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
