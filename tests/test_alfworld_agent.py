"""ALFWorld end to end with tiny models: SFT warm start, PPO, exact resume, held-out evaluation.

ALFWorld resets cost ~0.3 s and its prompts are long, so these runs are tiny (2 envs x 2 steps,
8-token answers, 64-px images) and marked slow, except the demonstration check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from vlm_agent.cli.main import main  # noqa: E402
from vlm_agent.training.ppo_config import VLMPPOConfig  # noqa: E402

ALFWORLD = "gym_cards/ALFWorld-v0"
SMALL_IMAGES = {"image_size": 64}


def alfworld_config(model_dir: Path, output_dir: Path, **overrides) -> VLMPPOConfig:
    settings = dict(
        model_name_or_path=str(model_dir), device="cpu", env_id=ALFWORLD, env_kwargs=SMALL_IMAGES,
        num_envs=2, num_steps=2, total_timesteps=8, max_new_tokens=8, temperature=1.0, cot_scale=0.2,
        invalid_action="penalty", ppo_epochs=1, mini_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-3, min_learning_rate=1e-4, max_grad_norm=1.0, lora_r=4, lora_alpha=8, save_every=1,
        output_dir=str(output_dir), progress_bar=False, deterministic=True,
    )
    settings.update(overrides)
    return VLMPPOConfig(**settings)


def trainable_snapshot(trainer) -> dict[str, torch.Tensor]:
    state = {name: p.detach().clone() for name, p in trainer.policy.model.named_parameters() if p.requires_grad}
    state.update({f"value_head.{k}": v.detach().clone() for k, v in trainer.policy.value_head.state_dict().items()})
    return state


def test_alfworld_demonstrations_hold_images_prompts_and_the_wrong_action_share() -> None:
    from vlm_agent.training.sft import build_demonstrations, demonstrations_dataset

    demos = build_demonstrations(ALFWORLD, 12, seed=0, wrong_action_rate=0.5, env_kwargs=SMALL_IMAGES)
    assert all(demo.image.shape == (64, 64, 3) for demo in demos)
    assert all("Your admissible actions of the current situation are: [" in demo.prompt for demo in demos)
    assert all("Your task is to:" in demo.prompt for demo in demos)
    wrong = sum(demo.action != demo.expert_action for demo in demos)
    assert 2 <= wrong <= 10
    for demo in demos:
        assert json.loads(demo.answer)["action"] == demo.action
    dataset = demonstrations_dataset(demos)  # PIL on the Dict observation failed here
    assert dataset[0]["images"][0].size == (64, 64)


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory):
    """Two PPO updates on ALFWorld in one go (qwen2_vl); shared by the tests below."""
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    run_dir = tmp_path_factory.mktemp("alfworld") / "straight"
    trainer = VLMPPOTrainer(alfworld_config(tiny_model_dir("qwen2_vl"), run_dir))
    before = trainable_snapshot(trainer)
    trainer.train()
    return trainer, before, run_dir


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_vl", "llava_next"])
def test_two_alfworld_updates_change_the_trainable_parameters(arch, straight_run, tiny_model_dir, tmp_path) -> None:
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    if arch == "qwen2_vl":
        trainer, before, run_dir = straight_run
    else:
        trainer = VLMPPOTrainer(alfworld_config(tiny_model_dir(arch), tmp_path / "run"))
        before = trainable_snapshot(trainer)
        run_dir = trainer.train()
    after = trainable_snapshot(trainer)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("lora" in name for name in changed) and any(n.startswith("value_head.") for n in changed)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["update"] for row in rows] == [1, 2]
    assert all(row["losses/value_loss"] > 0 for row in rows)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    # The prompt shows the text observation and this step's admissible commands.
    assert "Your admissible actions of the current situation are: ['" in samples[0]["prompt"]
    checkpoint = run_dir / "checkpoints" / "update_000002"
    assert not list(checkpoint.rglob("*.pkl")), "environments must not be pickled"
    (environments,) = json.loads((checkpoint / "state.json").read_text())["environments"]
    assert environments["env_id"] == ALFWORLD and len(environments["environments"]) == 2
    for env_state in environments["environments"]:
        episode = env_state["episode"]
        assert episode["game"].endswith("game.tw-pddl") and len(episode["commands"]) == len(episode["actions"])


@pytest.mark.slow
def test_alfworld_resume_gives_the_same_run_as_an_uninterrupted_one(straight_run, tiny_model_dir, tmp_path) -> None:
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    straight, _, straight_dir = straight_run
    model_dir = tiny_model_dir("qwen2_vl")
    VLMPPOTrainer(alfworld_config(model_dir, tmp_path / "resumed")).train(max_updates=1)
    resumed = VLMPPOTrainer(alfworld_config(model_dir, tmp_path / "resumed", resume=True))
    resumed.train()
    assert resumed.update == 2
    expected, actual = trainable_snapshot(straight), trainable_snapshot(resumed)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"

    def without_timing(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]

    assert without_timing(straight_dir / "metrics.jsonl") == without_timing(tmp_path / "resumed" / "metrics.jsonl")


@pytest.mark.slow
def test_alfworld_eval_on_held_out_games(straight_run, tmp_path, capsys) -> None:
    import gymnasium as gym

    _, _, run_dir = straight_run
    held_out = gym.make(ALFWORLD, split="eval", image_size=64).unwrapped
    assert held_out.games_root.endswith("valid_unseen") and held_out.game_files
    options = json.dumps({"split": "eval", "image_size": 64, "max_episode_steps": 3})
    code = main([
        "eval", "--methods", "expert", f"local:{run_dir / 'policy'}", "--env_ids", ALFWORLD, "--env_kwargs", options,
        "--episodes", "2", "--max_new_tokens", "8", "--out_dir", str(tmp_path), "--no_progress",
    ])
    assert code == 0
    results = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(results) == 2 and results[0]["method"] == "expert"
    for row in results:
        assert row["env_id"] == ALFWORLD and row["episodes"] == 2
        assert all(record["length"] <= 3 for record in row["records"])  # max_episode_steps reached gym.make


@pytest.mark.slow
def test_train_on_alfworld_warm_starts_the_tiny_model_on_expert_demonstrations(tmp_path, torch_single_thread, capsys) -> None:
    """The issue's reproduction: `vlm-agent train --env_id gym_cards/ALFWorld-v0` died in the SFT warm start."""
    run_dir = tmp_path / "run"
    code = main([
        "train", "--env_id", ALFWORLD, "--env_kwargs", "image_size: 64", "--output_dir", str(run_dir),
        "--sft_num_demos", "8", "--sft_epochs", "1", "--sft_wrong_action_rate", "0.25", "--num_envs", "2",
        "--num_steps", "1", "--total_timesteps", "2", "--mini_batch_size", "2", "--max_new_tokens", "8",
        "--final_eval_episodes", "2", "--no_progress_bar",
    ])
    assert code == 0
    summary = json.loads((run_dir / "base_model" / "sft_summary.json").read_text())
    assert summary["num_demos"] == 8 and summary["losses"] and summary["config"]["env_id"] == ALFWORLD
    assert summary["config"]["env_kwargs"] == SMALL_IMAGES
    assert (run_dir / "policy" / "policy_settings.json").is_file()
    out = capsys.readouterr().out
    assert "--env_kwargs '{\"image_size\": 64}'" in out
    assert "tiny_alfworld_cpu.yaml" in out  # ALFWorld's own demo config, sized for ALFWorld
    settings = json.loads((run_dir / "policy" / "agent_settings.json").read_text())
    assert settings["invalid_action"] == "nothing" and settings["history_steps"] == 2
    # The demo config's closing comparison ran on ALFWorld too (random, warm start, trained, expert).
    comparison = (run_dir / "held_out_comparison.csv").read_text()
    assert all(row in comparison for row in ("random", "warm start", "trained", "expert"))
