"""Every algorithm end to end on tiny random models: it trains, logs, saves, and its first ratio is 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from vlm_agent.models.policy import VLMPolicy  # noqa: E402
from vlm_agent.training.ppo_config import VLMPPOConfig  # noqa: E402
from vlm_agent.training.ppo_trainer import VLMPPOTrainer  # noqa: E402

CRITIC_FREE = ["grpo", "dr_grpo", "rloo", "gigpo"]


def group_config(model_dir: Path, output_dir: Path, algorithm: str, **overrides) -> VLMPPOConfig:
    """2 groups of 2 NumberLine episodes per round, rounds cut at 3 steps, ~12 env steps: seconds on one core."""
    settings = dict(
        model_name_or_path=str(model_dir), device="cpu", algorithm=algorithm, num_envs=4, group_size=2,
        num_steps=3, total_timesteps=12, max_new_tokens=8, temperature=1.0, ppo_epochs=2, mini_batch_size=4,
        gradient_accumulation_steps=1, learning_rate=1e-3, min_learning_rate=1e-4, max_grad_norm=1.0,
        lora_r=4, lora_alpha=8, save_every=1, output_dir=str(output_dir), progress_bar=False, deterministic=True,
        invalid_action="random",  # the random tiny model's answers are junk: random moves make returns differ
    )
    settings.update(overrides)
    return VLMPPOConfig(**settings)


@pytest.mark.parametrize("algorithm", CRITIC_FREE)
def test_critic_free_algorithms_train_without_a_value_head(tiny_model_dir, tmp_path, algorithm) -> None:
    config = group_config(tiny_model_dir("qwen2_vl"), tmp_path / "run", algorithm)
    trainer = VLMPPOTrainer(config)
    assert trainer.policy.value_head is None
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if p.requires_grad}
    run_dir = trainer.train()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["global_step"] >= config.total_timesteps
    assert all("losses/policy_loss" in row and "losses/value_loss" not in row for row in rows)
    # Every round's episodes end within the round (or are cut at num_steps): each row counts 4 episodes at most.
    assert all(row["charts/episodes"] <= config.num_envs for row in rows)
    changed = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "no trainable parameter moved"
    assert not (run_dir / "policy" / "value_head.safetensors").exists()
    reloaded = VLMPolicy.from_pretrained(run_dir / "policy")
    assert reloaded.value_head is None


@pytest.mark.parametrize("algorithm", ["ppo", *CRITIC_FREE])
def test_the_ratio_is_one_at_zero_parameter_change(tiny_model_dir, tmp_path, algorithm) -> None:
    overrides = dict(ppo_epochs=1, mini_batch_size=64, temperature=0.2)
    if algorithm == "ppo":
        overrides.update(num_envs=2, num_steps=2, total_timesteps=4, mini_batch_size=4)
    config = group_config(tiny_model_dir("qwen2_vl"), tmp_path / "run", algorithm, **overrides)
    trainer = VLMPPOTrainer(config)
    rollout, _ = trainer.collector.collect(config.num_steps)
    if algorithm != "ppo":
        trainer.config.mini_batch_size = len(rollout.flat_samples())  # one mini-batch
    stats = trainer.ppo_update(rollout)
    # No parameter changed between acting and this one gradient step: the ratio is 1 up to the float
    # rounding between the sampler's log-probs and the forward's.
    assert stats["losses/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert stats["losses/clip_fraction"] == 0.0


def test_groups_start_from_the_same_state_and_rounds_from_new_ones(tiny_model_dir, tmp_path) -> None:
    config = group_config(tiny_model_dir("qwen2_vl"), tmp_path / "run", "gigpo", num_envs=6, group_size=3)
    trainer = VLMPPOTrainer(config)
    first, _ = trainer.collector.collect(config.num_steps)
    starts = {int(t): key for t, s, key in zip(first.trajectory, first.step, first.state_keys) if int(s) == 0}
    assert len(starts) == 6
    assert starts[0] == starts[1] == starts[2] and starts[3] == starts[4] == starts[5]
    second, _ = trainer.collector.collect(config.num_steps)
    second_starts = {key for s, key in zip(second.step, second.state_keys) if int(s) == 0}
    assert trainer.collector.round == 2
    assert len(second_starts) <= 2 and second.group.max() == 1


def test_a_kl_term_without_lora_uses_the_starting_weights(tiny_model_dir, tmp_path) -> None:
    config = group_config(tiny_model_dir("qwen2_vl"), tmp_path / "run", "grpo", use_lora=False, kl_coef=0.1,
                          language_only=True)
    trainer = VLMPPOTrainer(config)
    rollout, _ = trainer.collector.collect(config.num_steps)
    samples = rollout.flat_samples()
    with torch.no_grad():
        out = trainer.policy.evaluate(samples, with_reference=True)
    assert torch.allclose(out.log_probs, out.ref_log_probs)  # nothing trained yet: the reference is the policy
    trainer.ppo_update(rollout)
    with torch.no_grad():
        after = trainer.policy.evaluate(samples, with_reference=True)
    assert torch.allclose(after.ref_log_probs, out.ref_log_probs, atol=1e-6)  # the reference did not move
    assert not torch.allclose(after.log_probs, out.log_probs)  # the policy did


def test_config_refuses_groups_that_do_not_divide_the_environments(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_envs=6 is not a multiple of group_size=4"):
        VLMPPOConfig(algorithm="grpo", num_envs=6, group_size=4)
    with pytest.raises(ValueError, match="algorithm='a2c' is not an algorithm"):
        VLMPPOConfig(algorithm="a2c")
    with pytest.raises(ValueError, match="loss_aggregation='token' is not an aggregation"):
        VLMPPOConfig(algorithm="grpo", num_envs=8, loss_aggregation="token")


def test_a_resumed_gigpo_run_equals_an_uninterrupted_one(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    straight = VLMPPOTrainer(group_config(model_dir, tmp_path / "straight", "gigpo"))
    straight.train()
    first = VLMPPOTrainer(group_config(model_dir, tmp_path / "resumed", "gigpo"))
    first.train(max_updates=1)
    resumed = VLMPPOTrainer(group_config(model_dir, tmp_path / "resumed", "gigpo", resume=True))
    resumed.train()
    assert resumed.update == straight.update and resumed.global_step == straight.global_step
    for name, parameter in straight.policy.model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, dict(resumed.policy.model.named_parameters())[name]), name


def test_the_cli_takes_an_algorithm_and_refuses_an_unknown_one(tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vlm_agent.cli", "train", "--algorithm", "a2c",
                             "--output_dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "algorithm='a2c' is not an algorithm" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
