"""Supervised warm start: expert demonstrations and TRL SFTTrainer on a tiny VLM."""

from __future__ import annotations

import json
import warnings

import pytest

from vlm_agent.parsing import parse_action
from vlm_agent.sft import VLMSFTConfig, build_demonstrations, summarize_demonstrations


def test_demonstrations_follow_the_expert_and_read_out_the_state() -> None:
    demos = build_demonstrations("gym_cards/NumberLine-v0", 24, seed=3)
    assert len(demos) == 24
    assert summarize_demonstrations(demos)["wrong"] == 0
    for demo in demos:
        assert demo.image.shape == (300, 300, 3)
        answer = json.loads(demo.answer)
        assert list(answer)[-1] == "action" and answer["action"] == demo.expert_action
        assert "current number" in answer and "target number" in answer
        expected = "+" if int(answer["current number"]) < int(answer["target number"]) else "-"
        assert demo.expert_action == expected
        assert parse_action(demo.answer, ["-", "+"]).index == ["-", "+"].index(demo.expert_action)
        assert "['-', '+']" in demo.prompt


def test_wrong_action_rate_mixes_in_wrong_answers() -> None:
    assert summarize_demonstrations(build_demonstrations("gym_cards/Blackjack-v0", 40, seed=0, wrong_action_rate=1.0))[
        "wrong"
    ] == 40
    mixed = build_demonstrations("gym_cards/NumberLine-v0", 200, seed=0, wrong_action_rate=0.3)
    wrong = summarize_demonstrations(mixed)["wrong"]
    assert 30 <= wrong <= 90  # binomial(200, 0.3): mean 60, sd 6.5
    action_only = build_demonstrations("gym_cards/NumberLine-v0", 4, seed=0, use_cot=False)
    assert all(json.loads(d.answer) == {"action": d.action} for d in action_only)


def test_demonstrations_are_reproducible() -> None:
    a = build_demonstrations("gym_cards/NumberLine-v0", 10, seed=7, wrong_action_rate=0.5)
    b = build_demonstrations("gym_cards/NumberLine-v0", 10, seed=7, wrong_action_rate=0.5)
    assert [d.answer for d in a] == [d.answer for d in b]


def test_bad_sft_config() -> None:
    with pytest.raises(ValueError, match="wrong_action_rate=1.5 must lie in"):
        VLMSFTConfig(wrong_action_rate=1.5)
    with pytest.raises(ValueError, match="num_demos=0 must be >= 1"):
        VLMSFTConfig(num_demos=0)


def test_sft_on_a_handful_of_demos_lowers_the_loss(tiny_model_dir, tmp_path) -> None:
    from vlm_agent.models import ModelSettings
    from vlm_agent.policy import VLMPolicy
    from vlm_agent.sft import run_sft

    config = VLMSFTConfig(
        model_name_or_path=str(tiny_model_dir("qwen2_vl")),
        num_demos=16,
        epochs=3,
        learning_rate=1e-2,
        batch_size=8,
        output_dir=str(tmp_path / "sft"),
        progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_sft(config)
    # Activation checkpointing is off under its current name (no deprecated-alias warning).
    assert not [w for w in caught if "checkpointing" in str(w.message)]
    assert len(result.losses) == 6
    assert result.last_loss < 0.8 * result.first_loss
    summary = json.loads((tmp_path / "sft" / "sft_summary.json").read_text())
    assert summary["num_demos"] == 16
    policy = VLMPolicy.from_model(ModelSettings(str(result.model_dir), use_lora=False, device="cpu"))
    assert policy.value_head is not None
