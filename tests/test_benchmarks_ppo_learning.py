"""benchmarks/ppo_learning.py: the image-only rows start from a model aligned on their own env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_an_aligned_model_of_another_env_is_refused_in_one_line(tmp_path: Path) -> None:
    from benchmarks import ppo_learning

    aligned = tmp_path / "aligned"
    aligned.mkdir()
    args = ppo_learning.parse_args(["--aligned-model", str(aligned)])
    with pytest.raises(SystemExit, match="no align_summary.json"):
        ppo_learning.aligned_model(args, "gym_cards/Blackjack-v0")
    (aligned / "align_summary.json").write_text("{not json")
    with pytest.raises(SystemExit, match="unreadable align_summary.json"):
        ppo_learning.aligned_model(args, "gym_cards/Blackjack-v0")
    (aligned / "align_summary.json").write_text(json.dumps({"config": {"env_ids": ["gym_cards/NumberLine-v0"]}}))
    with pytest.raises(SystemExit, match="aligned on .*NumberLine-v0.*, not gym_cards/Blackjack-v0"):
        ppo_learning.aligned_model(args, "gym_cards/Blackjack-v0")
    assert ppo_learning.aligned_model(args, "gym_cards/NumberLine-v0") == aligned


def test_blackjack_aligns_with_its_measured_settings() -> None:
    from benchmarks import ppo_learning
    from vlm_agent.demo.alignment import VLMAlignConfig

    config = VLMAlignConfig(env_ids=["gym_cards/Blackjack-v0"], **ppo_learning.ALIGN_SETTINGS["gym_cards/Blackjack-v0"])
    assert config.projector_fit and config.num_examples > VLMAlignConfig().num_examples


def test_the_unseen_pairs_row_trains_and_evaluates_on_disjoint_numberline_splits() -> None:
    from benchmarks import ppo_learning
    from vlm_agent.demo.warm_start import warm_start_alignment
    from vlm_agent.training.ppo_config import VLMPPOConfig

    variant = next(v for v in ppo_learning.VARIANTS if v.max_position is not None)
    assert not variant.show_state and variant.env_kwargs("train") == {"max_position": ppo_learning.LONG_LINE,
                                                                     "split": "train"}
    assert variant.env_kwargs("eval")["split"] == "eval"
    assert all(v.env_kwargs("train") == {} for v in ppo_learning.VARIANTS if v.max_position is None)
    # The demo's alignment reads the states the run trains on (it used to refuse env_kwargs).
    config = VLMPPOConfig(env_kwargs=variant.env_kwargs("train"))
    assert warm_start_alignment(config, "").env_kwargs == variant.env_kwargs("train")


def test_the_alfworld_page_is_generated_from_the_csv_rows_with_the_targets_checked(tmp_path: Path) -> None:
    from benchmarks import ppo_learning_alfworld as alf

    def row(k: int, split: str, before: float, after: float, low: float, high: float, invalid: float) -> dict:
        values = {"history_steps": k, "split": split, "games": dict(alf.SPLITS)[split], "task_types": "pick",
                  "max_episode_steps": 20, "invalid_action": "nothing", "wrong_action_rate": 0.2, "sft_demos": 8,
                  "sft_epochs": 1, "sft_last_loss": 0.5, "ppo_env_steps": 16, "ppo_updates": 1, "ppo_lr": 5e-5,
                  "sft_seconds": 60, "ppo_seconds": 120, "command": f"python -m benchmarks.ppo_learning --alfworld K{k}",
                  "after_episodes": 32}
        for when, (value, lo, hi) in (("before", (before, 0.1, 0.3)), ("after", (after, low, high))):
            values.update({f"{when}_success": value, f"{when}_success_low": lo, f"{when}_success_high": hi,
                           f"{when}_goal": value, f"{when}_goal_low": lo, f"{when}_goal_high": hi,
                           f"{when}_invalid": invalid})
        return values

    rows = [row(0, "train", 0.2, 0.7, 0.5, 0.85, 0.1), row(0, "eval", 0.0, 0.05, 0.01, 0.2, 0.15),
            row(2, "train", 0.2, 0.25, 0.1, 0.4, 0.3), row(2, "eval", 0.0, 0.0, 0.0, 0.1, 0.5)]
    alf.write_csv(tmp_path / "rows.csv", rows)
    alf.write_markdown(tmp_path / "rows.md", alf.read_csv(tmp_path / "rows.csv"), [])
    page = (tmp_path / "rows.md").read_text()
    assert "nothing here is written by hand" in page
    assert "| 0 | train games | 20.0 [10.0, 30.0] | 70.0 [50.0, 85.0] |" in page
    assert ("- K = 0: train-game success after PPO above the warm start with non-overlapping 95% intervals: **yes**"
            in page)
    assert "held-out success above 0: **yes**" in page and "below 20%: **yes**" in page
    assert "- K = 2: train-game success after PPO above the warm start with non-overlapping 95% intervals: **no**" in page
    assert "K = 2 25.0 [10.0, 40.0] vs K = 0 70.0 [50.0, 85.0] success after PPO" in page
    assert "the success intervals do not overlap" in page
    assert "`python -m benchmarks.ppo_learning --alfworld K2`" in page
