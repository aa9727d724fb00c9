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
