"""VLMPPOConfig: defaults are the paper's, bad values fail with a message that says what to do."""

from __future__ import annotations

import pytest

from vlm_agent.training.ppo_config import VLMPPOConfig


def test_defaults_are_the_papers() -> None:
    config = VLMPPOConfig()
    assert (config.gamma, config.gae_lambda, config.clip_range, config.vf_coef) == (0.9, 0.95, 0.1, 0.5)
    assert (config.ppo_epochs, config.cot_scale, config.temperature, config.max_grad_norm) == (4, 0.5, 0.2, 0.01)
    assert (config.learning_rate, config.min_learning_rate, config.lr_scheduler) == (1e-5, 1e-9, "cosine")
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (128, 256, 0.05)
    assert (config.num_steps, config.total_timesteps, config.max_new_tokens) == (512, 15000, 256)
    assert (config.mini_batch_size, config.gradient_accumulation_steps) == (1, 128)
    assert config.num_updates() == 30  # ceil(15000 / 512)
    assert config.num_updates(world_size=2) == 15


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gamma": 1.5}, "gamma=1.5 must lie in [0, 1]; set --gamma between 0 and 1"),
        ({"cot_scale": -0.1}, "cot_scale=-0.1 must lie in [0, 1]"),
        ({"num_envs": 0}, "num_envs=0 must be a positive integer; set --num_envs to 1 or more"),
        ({"temperature": 0.0}, "temperature=0.0 must be a positive finite number"),
        ({"clip_range": -1.0}, "clip_range=-1.0 must be a positive finite number"),
        ({"kl_coef": -0.5}, "kl_coef=-0.5 must not be negative"),
        ({"min_learning_rate": 1.0}, "min_learning_rate=1.0 exceeds learning_rate"),
        ({"invalid_action": "ignore"}, "invalid_action='ignore' is not a policy; choose one of ('random', 'penalty', 'nothing')"),
        ({"kv_cache": "paged"}, "kv_cache='paged' is not a cache kind; use 'static' or 'dynamic'"),
        ({"env_id": "NumberLine"}, "is not a namespaced, versioned Gymnasium id; use .gym_cards/NumberLine-v0."),
        ({"env_id": "NumberLine/v0"}, "is not a namespaced, versioned Gymnasium id; use e.g. gym_cards/NumberLine-v0"),
        ({"report_to": "tensorboard,mlflow"}, "names unknown logger 'mlflow'"),
        ({"resume": True}, "resume=True needs the run directory; also pass --output_dir"),
        ({"num_envs": 3, "num_steps": 5, "mini_batch_size": 4}, "does not divide the rollout of num_steps*num_envs=15"),
        ({"tiny_arch": "gpt2"}, "tiny_arch='gpt2' is not a known tiny architecture"),
        ({"lora_dropout": 1.0}, "lora_dropout=1.0 must lie in [0, 1)"),
        ({"clip_range_value": 0.0}, "clip_range_value=0.0 must be positive or None"),
    ],
)
def test_bad_values_raise_documented_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        VLMPPOConfig(**overrides)


def test_optional_floats_accept_none_text_from_the_command_line() -> None:
    config = VLMPPOConfig(clip_range_value="None", target_kl="0.05")  # type: ignore[arg-type]
    assert config.clip_range_value is None
    assert config.target_kl == 0.05
    assert config.report_targets == []
    assert VLMPPOConfig(report_to="tensorboard, wandb").report_targets == ["tensorboard", "wandb"]
