"""End-to-end PPO on tiny random models: it trains, logs, checkpoints and resumes exactly."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vlm_agent.training.checkpoint import CheckpointError  # noqa: E402
from vlm_agent.training.ppo_config import VLMPPOConfig  # noqa: E402
from vlm_agent.training.ppo_trainer import VLMPPOTrainer  # noqa: E402

from model_helpers import assert_language_layers_alone, changed_weights  # noqa: E402


def small_config(model_dir: Path | None, output_dir: Path, **overrides) -> VLMPPOConfig:
    """Two updates of 2 envs x 2 steps, 8-token answers: seconds on one core."""
    settings = dict(
        model_name_or_path=None if model_dir is None else str(model_dir),
        device="cpu",
        num_envs=2,
        num_steps=2,
        total_timesteps=8,
        max_new_tokens=8,
        temperature=1.0,
        ppo_epochs=2,
        mini_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        max_grad_norm=1.0,
        lora_r=4,
        lora_alpha=8,
        save_every=1,
        output_dir=str(output_dir),
        progress_bar=False,
        deterministic=True,
    )
    settings.update(overrides)
    return VLMPPOConfig(**settings)


def trainable_snapshot(trainer: VLMPPOTrainer) -> dict[str, torch.Tensor]:
    state = {name: p.detach().clone() for name, p in trainer.policy.model.named_parameters() if p.requires_grad}
    state.update({f"value_head.{k}": v.detach().clone() for k, v in trainer.policy.value_head.state_dict().items()})
    return state


@pytest.mark.parametrize(("arch", "kl_coef"), [("qwen2_vl", 0.1), ("llava_next", 0.0)])
def test_two_updates_log_losses_and_change_trainable_parameters(tiny_model_dir, tmp_path, arch, kl_coef) -> None:
    config = small_config(tiny_model_dir(arch), tmp_path / "run", kl_coef=kl_coef, report_to="tensorboard")
    trainer = VLMPPOTrainer(config)
    before = trainable_snapshot(trainer)
    frozen_name, frozen = next(
        (name, p.detach().clone()) for name, p in trainer.policy.model.named_parameters() if not p.requires_grad
    )
    run_dir = trainer.train()

    after = trainable_snapshot(trainer)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("lora" in name for name in changed), "LoRA weights did not move"
    assert any(name.startswith("value_head.") for name in changed), "value head did not move"
    assert torch.equal(dict(trainer.policy.model.named_parameters())[frozen_name], frozen), "a frozen weight moved"

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["update"] for row in rows] == [1, 2]
    assert [row["global_step"] for row in rows] == [4, 8]
    for row in rows:
        for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/grad_norm",
                    "losses/clip_fraction", "losses/ratio", "losses/explained_variance"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), f"{key} was not logged as a finite number"
        assert 0.0 <= row["charts/invalid_action_rate"] <= 1.0
        assert row["losses/value_loss"] > 0 and row["losses/grad_norm"] > 0 and row["losses/entropy"] > 0
    if kl_coef > 0:
        assert any(row["losses/kl_to_reference"] > 0 for row in rows)
    assert rows[1]["charts/learning_rate"] < rows[0]["charts/learning_rate"]  # cosine schedule
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and {"answer", "parsed_action", "executed_action", "reward"} <= set(samples[0])
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert (run_dir / "policy" / "adapter_config.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard" / "vlm-agent"))  # written through accelerate's tracker
    events.Reload()
    assert [event.step for event in events.Scalars("losses/value_loss")] == [4, 8]
    assert (run_dir / "checkpoints" / "update_000002" / "manifest.json").is_file()


def test_language_only_ppo_moves_the_layers_and_keeps_vision_and_embeddings(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    run_dir = VLMPPOTrainer(small_config(model_dir, tmp_path / "run", use_lora=False, language_only=True)).train()
    assert_language_layers_alone(changed_weights(model_dir, run_dir / "policy"))
    with pytest.raises(ValueError, match="language_only.*excludes use_lora"):
        small_config(model_dir, tmp_path / "refused", language_only=True)


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    straight = VLMPPOTrainer(small_config(model_dir, tmp_path / "straight"))
    straight.train()

    first = VLMPPOTrainer(small_config(model_dir, tmp_path / "resumed"))
    first.train(max_updates=1)
    assert first.update == 1
    resumed = VLMPPOTrainer(small_config(model_dir, tmp_path / "resumed", resume=True))
    resumed.train()
    assert resumed.update == 2

    expected, actual = trainable_snapshot(straight), trainable_snapshot(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
    straight_rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed_rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()

    def without_timing(line: str) -> dict:
        return {k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}

    assert [without_timing(r) for r in straight_rows] == [without_timing(r) for r in resumed_rows]


def test_resume_refuses_corrupt_or_mismatched_checkpoints(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    run = tmp_path / "run"
    VLMPPOTrainer(small_config(model_dir, run)).train(max_updates=1)

    with pytest.raises(CheckpointError, match="lora_r: checkpoint 4 != now 8"):
        VLMPPOTrainer(small_config(model_dir, run, resume=True, lora_r=8)).train()

    spare = tmp_path / "spare"
    shutil.copytree(run, spare)
    optimizer_file = spare / "checkpoints" / "update_000001" / "tensors" / "optimizer.pt"
    optimizer_file.write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt: tensors/optimizer.pt"):
        VLMPPOTrainer(small_config(model_dir, spare, resume=True)).train()


def test_a_fresh_run_refuses_an_output_dir_that_holds_a_run(tiny_model_dir, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    # No checkpoint to resume from: --resume would be refused too, so the advice is another folder.
    with pytest.raises(FileExistsError, match="no complete checkpoint to continue it from; choose another --output_dir"):
        VLMPPOTrainer(small_config(tiny_model_dir("qwen2_vl"), run)).train()


def perturb_lora_b(trainer: VLMPPOTrainer, seed: int = 0) -> None:
    """Give the LoRA B matrices (zero when fresh) random values, as a trained adapter has: with B = 0
    LoRA dropout acts on a branch that contributes nothing, and hides any noise it would add."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in trainer.policy.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def test_default_lora_dropout_leaves_the_first_ratio_at_one(tiny_model_dir, tmp_path) -> None:
    config = small_config(tiny_model_dir("qwen2_vl"), tmp_path / "run", ppo_epochs=1, mini_batch_size=4, temperature=0.2)
    assert config.lora_dropout == 0.05  # the default, not switched off for the test
    trainer = VLMPPOTrainer(config)
    perturb_lora_b(trainer)
    rollout, _ = trainer.collector.collect(config.num_steps)
    samples = rollout.flat_samples()

    # The update's forward (train mode) scores stored answers exactly as eval mode does.
    with torch.no_grad():
        trainer.policy.train()
        in_train_mode = trainer.policy.evaluate(samples)
        trainer.policy.eval()
        in_eval_mode = trainer.policy.evaluate(samples)
    assert torch.equal(in_train_mode.log_probs, in_eval_mode.log_probs)
    assert torch.equal(in_train_mode.values, in_eval_mode.values)

    # One epoch, one mini-batch: no parameter changed between acting and this gradient step, so the
    # ratio is 1 up to the float rounding between the sampler's log-probs and the forward's
    # (with dropout 0.05 on: clip fraction 0.69-0.94 and approx KL 0.06-0.11 on this setup).
    stats = trainer.ppo_update(rollout)
    assert stats["losses/clip_fraction"] == 0.0
    assert stats["losses/approx_kl"] < 1e-9
    assert stats["losses/ratio"] == pytest.approx(1.0, abs=1e-5)


def test_seed_seeds_python_numpy_and_torch(tiny_model_dir, tmp_path) -> None:
    draws = []
    for run, seed in enumerate((5, 5, 6)):
        VLMPPOTrainer(small_config(tiny_model_dir("qwen2_vl"), tmp_path / f"run{run}", seed=seed))
        draws.append((random.random(), float(np.random.random()), float(torch.rand(1))))
    assert draws[0] == draws[1]
    assert all(a != b for a, b in zip(draws[0], draws[2]))


def test_entropy_bonus_raises_the_entropy_of_the_answers(tiny_model_dir, tmp_path) -> None:
    change = {}
    for ent_coef in (0.0, 5.0):
        trainer = VLMPPOTrainer(
            small_config(tiny_model_dir("qwen2_vl"), tmp_path / f"ent{ent_coef}", ent_coef=ent_coef, ppo_epochs=3)
        )
        rollout, _ = trainer.collector.collect(trainer.config.num_steps)
        samples = rollout.flat_samples()
        with torch.no_grad():
            before = float(trainer.policy.evaluate(samples).entropy.mean())
        trainer.ppo_update(rollout)
        with torch.no_grad():
            change[ent_coef] = float(trainer.policy.evaluate(samples).entropy.mean()) - before
    assert change[5.0] > 0
    assert change[5.0] > change[0.0]


def test_constant_schedule_keeps_the_learning_rate(tiny_model_dir, tmp_path) -> None:
    config = small_config(
        tiny_model_dir("qwen2_vl"), tmp_path / "run", lr_scheduler="constant", ppo_epochs=1, max_new_tokens=4,
        value_head_learning_rate=3e-3,
    )
    trainer = VLMPPOTrainer(config)
    run_dir = trainer.train()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["charts/learning_rate"] for row in rows] == [1e-3, 1e-3]
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [1e-3, 3e-3]


def test_aligned_warm_start_reads_with_legible_vision_and_trains_language_layers(tmp_path) -> None:
    from vlm_agent.demo.warm_start import check_demo, train_demo

    config = small_config(None, tmp_path / "run", use_lora=False, language_only=True, show_state=False,
                          align_projector_steps=2, align_language_steps=2, align_num_examples=32,
                          sft_num_demos=4, sft_epochs=1.0)
    run_dir = train_demo(config)
    assert (run_dir / "aligned_model" / "align_summary.json").is_file()
    assert_language_layers_alone(changed_weights(run_dir / "aligned_model", run_dir / "base_model"))  # what SFT moved
    with pytest.raises(ValueError, match="ALFWorld-v0. has no built-in read-out"):
        check_demo(small_config(None, tmp_path / "x", align_projector_steps=2, env_id="gym_cards/ALFWorld-v0"))
