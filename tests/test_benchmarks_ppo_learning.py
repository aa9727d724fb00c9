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
