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
    assert "| 0 | shipped | train games | 20.0 [10.0, 30.0] | 70.0 [50.0, 85.0] |" in page
    assert ("- K = 0: train-game success after PPO above the warm start with non-overlapping 95% intervals: **yes**"
            in page)
    assert "held-out success above 0: **yes**" in page and "below 20%: **yes**" in page
    assert "- K = 2: train-game success after PPO above the warm start with non-overlapping 95% intervals: **no**" in page
    assert "K = 2 25.0 [10.0, 40.0] vs K = 0 70.0 [50.0, 85.0] success after PPO" in page
    assert "the success intervals do not overlap" in page
    assert "`python -m benchmarks.ppo_learning --alfworld K2`" in page
    # A run on other train games is a row of its own, checked on its own and compared with no run of other games.
    other = [dict(r, data_path="runs/games", train_games=200) for r in rows[:2]]
    other[0].update(after_success_low=0.1, command="python -m benchmarks.ppo_learning --alfworld other")
    alf.write_csv(tmp_path / "rows.csv", rows + other)
    alf.write_markdown(tmp_path / "rows.md", alf.read_csv(tmp_path / "rows.csv"), [])
    page = (tmp_path / "rows.md").read_text()
    assert "| 0 | runs/games (200 games) | train games | 20.0 [10.0, 30.0] | 70.0 [10.0, 85.0] |" in page
    assert ("- K = 0, train games runs/games (200 games): train-game success after PPO above the warm start with "
            "non-overlapping 95% intervals: **no**") in page
    assert page.count("- History, train games") == 1


def test_the_alfworld_data_path_chooses_the_train_games_and_the_held_out_games_stay_shipped(tmp_path: Path) -> None:
    import shutil

    from benchmarks import ppo_learning, ppo_learning_alfworld as alf
    from gym_cards.alfworld.env import PACK_DIR
    from vlm_agent.rollout.loop import make_env

    games = tmp_path / "games" / "json_2.1.1" / "train"
    shutil.copytree(Path(PACK_DIR) / "json_2.1.1" / "train", games)
    args = ppo_learning.parse_args(["--alfworld", "--alfworld-task-types", "pick", "--alfworld-data-path",
                                    str(tmp_path / "games")])
    train, held_out = alf.env_kwargs(args, "train"), alf.env_kwargs(args, "eval")
    assert train["data_path"] == str(tmp_path / "games") and "data_path" not in held_out
    for kwargs, root in ((train, games), (held_out, Path(PACK_DIR) / "json_2.1.1" / "valid_unseen")):
        env = make_env(alf.ALFWORLD, kwargs)  # as the benchmark's SFT, PPO and evaluation make it
        assert env.unwrapped.games_root == str(root)
        env.close()
    assert alf.train_games(args) == (str(tmp_path / "games"), 4)  # the shipped pack has 4 pick games
    # The warm start of other games is another cache entry, and the rows of (games, K) replace only their own.
    assert alf._data_tag(args) and not alf._data_tag(ppo_learning.parse_args(["--alfworld"]))
    assert alf._key({"history_steps": "0"}) != alf._key({"history_steps": "0", "data_path": str(tmp_path / "games")})
    assert alf._key({"history_steps": "0"}) == alf._key({"history_steps": "0", "data_path": "shipped"})


def test_a_missing_alfworld_data_path_stops_in_one_line_before_any_training(tmp_path: Path) -> None:
    from benchmarks import ppo_learning

    with pytest.raises(SystemExit) as stop:
        ppo_learning.main(["--alfworld", "--alfworld-data-path", str(tmp_path / "nowhere"),
                           "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out")])
    message = str(stop.value.code)
    assert message.startswith("error: --alfworld-data-path:") and "nowhere" in message and "\n" not in message
    assert not (tmp_path / "out" / "ppo_learning_alfworld.csv").exists()
