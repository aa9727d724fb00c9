"""Supervised warm start: expert demonstrations and TRL SFTTrainer on a tiny VLM."""

from __future__ import annotations

import json
import warnings

import pytest

from vlm_agent.prompting.parsing import parse_action
from vlm_agent.training.sft import VLMSFTConfig, build_demonstrations, summarize_demonstrations

from model_helpers import assert_language_layers_alone, changed_weights


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


def answer_nll(model_dir, demos) -> float:
    """Mean negative log-likelihood per token of the demonstrations' answers given their prompts
    (teacher forcing), under the model saved in `model_dir`."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from vlm_agent.models.loading import load_processor
    from vlm_agent.prompting.templates import chat_messages

    processor = load_processor(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    for demo in demos:
        image = [Image.fromarray(demo.image)]
        prompt = processor.apply_chat_template(chat_messages(demo.prompt), tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(chat_messages(demo.prompt, demo.answer), tokenize=False)
        prompt_ids = processor(images=image, text=[prompt], return_tensors="pt")["input_ids"][0]
        inputs = processor(images=image, text=[full], return_tensors="pt")
        ids = inputs["input_ids"][0]
        assert torch.equal(ids[: len(prompt_ids)], prompt_ids)  # the prompt is a prefix of the example
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        targets = ids[len(prompt_ids) :]
        log_probs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1].float(), dim=-1)
        total -= float(log_probs.gather(-1, targets[:, None]).sum())
        count += len(targets)
    return total / count


def test_sft_on_a_handful_of_demos_lowers_the_loss(tiny_model_dir, tmp_path) -> None:
    from vlm_agent.training.sft import run_sft

    base = tiny_model_dir("qwen2_vl")
    config = VLMSFTConfig(
        model_name_or_path=str(base),
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
    # The saved model is the trained one: it explains the demonstrations' answers better than the
    # model it started from (on demonstrations it was trained on, and on fresh ones).
    for demos in (build_demonstrations(config.env_id, 4, seed=config.seed), build_demonstrations(config.env_id, 4, seed=999)):
        assert answer_nll(result.model_dir, demos) < 0.8 * answer_nll(base, demos)


def test_language_only_sft_trains_the_layers_and_keeps_embeddings_and_vision(tiny_model_dir, tmp_path) -> None:
    from vlm_agent.training.sft import run_sft

    base = tiny_model_dir("qwen2_vl")
    config = VLMSFTConfig(model_name_or_path=str(base), num_demos=8, epochs=1, learning_rate=1e-2, batch_size=4,
                          language_only=True, output_dir=str(tmp_path / "sft"), progress_bar=False)
    run_sft(config)
    assert_language_layers_alone(changed_weights(base, tmp_path / "sft"))
    with pytest.raises(ValueError, match="language_only and use_lora"):
        VLMSFTConfig(language_only=True, use_lora=True)
