"""The run's rollout engine (`--rollout_engine hf|vllm`), and what an engine outside the trainer adds
to an update: the truncated importance weights (`--old_log_probs engine_tis`) and the
engine-vs-trainer mismatch metrics (`engine/*`).

The in-process engine is `vlm_agent.rollout.engine.HFEngine`; the vLLM one
(`vlm_agent.rollout.vllm_engine.VLLMEngine`) samples on a server, at `--vllm_url` or started here
for the run from the vLLM venv, and loads the trainer's adapter after every update.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_agent.algorithms.engine_mismatch import mismatch_stats, truncated_importance_weights
from vlm_agent.models.batching import PolicySample
from vlm_agent.models.policy import VLMPolicy
from vlm_agent.rollout.engine import HFEngine
from vlm_agent.rollout.vllm_engine import VLLMEngine
from vlm_agent.rollout.vllm_server import VLLMServerSettings, max_lora_rank, server_env, vllm_python
from vlm_agent.training.ppo_config import VLMPPOConfig


def make_rollout_engine(config: VLMPPOConfig, policy: VLMPolicy, rng: np.random.Generator,
                        run_dir: Path) -> HFEngine | VLLMEngine:
    """The engine `config.rollout_engine` names; a vLLM one connects (or starts its server) at its first rollout."""
    if config.rollout_engine == "hf":
        return HFEngine(policy, rng)
    assert config.model_name_or_path is not None
    server = None
    if config.vllm_url is None:
        server = VLLMServerSettings(
            model=config.model_name_or_path, python=vllm_python(config.vllm_python),
            max_lora_rank=max_lora_rank(config.lora_r), dtype=config.dtype, max_num_seqs=config.num_envs,
            extra_args=config.vllm_server_args, env=server_env(),
        )
    return VLLMEngine(policy, rng, adapter_dir=run_dir / "vllm_adapters", model=config.model_name_or_path,
                      url=config.vllm_url, server=server)


def advantage_weights(samples: Sequence[PolicySample], config: VLMPPOConfig) -> torch.Tensor | None:
    """Per-sample weights of the advantages: the truncated importance weights with `engine_tis`, else None."""
    if config.old_log_probs != "engine_tis":
        return None
    trainer = torch.tensor([sample.log_prob for sample in samples], dtype=torch.float64)
    engine = torch.tensor([sample.engine_log_prob for sample in samples], dtype=torch.float64)
    return truncated_importance_weights(trainer, engine, config.tis_cap)


def engine_metrics(samples: Sequence[PolicySample], config: VLMPPOConfig) -> dict[str, Any]:
    """`engine/mean_abs_delta_logp` and `engine/kl` over the update's sampled tokens (vLLM engine only),
    plus the mean and the capped share of the TIS weights with `engine_tis`."""
    scored = [sample for sample in samples if sample.engine_token_log_probs is not None]
    if not scored:
        return {}
    engine = torch.cat([sample.engine_token_log_probs for sample in scored])
    trainer = torch.cat([sample.trainer_token_log_probs for sample in scored])
    mean_abs, kl = mismatch_stats(engine, trainer)
    metrics: dict[str, Any] = {"engine/mean_abs_delta_logp": mean_abs, "engine/kl": kl}
    weights = advantage_weights(scored, config)
    if weights is not None:
        metrics["engine/tis_weight_mean"] = float(weights.mean())
        metrics["engine/tis_capped_share"] = float((weights >= config.tis_cap).double().mean())
    return metrics
