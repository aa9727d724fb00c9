"""benchmarks/cnn_rl_baseline.py: flags, curve statistics, and a tiny real end-to-end run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cnn_rl_baseline import (
    PAPER_CNN_RL_SUCCESS,
    CnnBaselineConfig,
    TrainingEpisode,
    main,
    parse_args,
    peak_success,
    rolling_mean,
)


def test_rolling_mean_and_peak() -> None:
    np.testing.assert_allclose(rolling_mean(np.array([1, 0, 1, 1, 0.0]), 2), [1, 0.5, 0.5, 1, 0.5])
    episodes = [TrainingEpisode(i, bool(s), 0.0, 1) for i, s in enumerate([0, 0, 1, 1, 1, 0])]
    assert peak_success(episodes, window=3) == 1.0
    assert peak_success(episodes, window=100) == pytest.approx(0.5)  # fewer than a window: all of them


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--envs", "Poker"], "--envs must name"),
        (["--total-steps", "0"], "--total-steps must be a positive"),
        (["--frame-size", "20"], "--frame-size must be at least 36"),
        (["--n-envs", "3", "--n-steps", "10", "--batch-size", "7"], "--batch-size"),
        (["--eval-policy", "argmax"], "--eval-policy must be one of"),
    ],
)
def test_bad_flags_get_one_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_defaults_are_the_paper_budget() -> None:
    config = CnnBaselineConfig()
    assert config.total_steps == 15000
    assert config.envs == list(PAPER_CNN_RL_SUCCESS)


def tiny_run_argv(out_dir: Path) -> list[str]:
    return [
        "--envs", "NumberLine", "--total-steps", "256", "--n-envs", "2", "--n-steps", "64",
        "--batch-size", "64", "--n-epochs", "1", "--frame-size", "36", "--eval-episodes", "30",
        "--eval-envs", "8", "--eval-policy", "both", "--seed", "3", "--out-dir", str(out_dir), "--no-progress",
    ]  # fmt: skip


def test_tiny_end_to_end_run_writes_sane_results_and_is_seeded(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    assert main(tiny_run_argv(tmp_path)) == 0
    assert main(tiny_run_argv(tmp_path / "again")) == 0
    # Same seed, same training episodes and the same held-out outcomes.
    assert (tmp_path / "cnn_rl_baseline_curves.csv").read_text() == (
        tmp_path / "again" / "cnn_rl_baseline_curves.csv"
    ).read_text()
    with open(tmp_path / "again" / "cnn_rl_baseline.csv") as handle:
        rerun = [(r["eval_policy"], r["success"]) for r in csv.DictReader(handle)]

    with open(tmp_path / "cnn_rl_baseline.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["env"], r["eval_policy"]) for r in rows] == [("NumberLine", "sampled"), ("NumberLine", "greedy")]
    for row in rows:
        assert float(row["paper_success"]) == 87.1
        assert int(row["eval_episodes"]) == 30
        assert int(row["train_steps"]) == 256
        assert 0.0 <= float(row["ci95_low"]) <= float(row["success"]) <= float(row["ci95_high"]) <= 100.0
        assert int(row["train_episodes"]) > 0
    assert [(r["eval_policy"], r["success"]) for r in rows] == rerun
    row = rows[0]

    with open(tmp_path / "cnn_rl_baseline_curves.csv") as handle:
        curve = list(csv.DictReader(handle))
    assert len(curve) == int(row["train_episodes"])
    steps = [int(r["env_step"]) for r in curve]
    assert steps == sorted(steps) and 0 < steps[-1] <= 256
    # NumberLine episodes last at most 2 * max_position = 10 steps.
    assert all(1 <= int(r["length"]) <= 10 for r in curve)
    assert {r["success"] for r in curve} <= {"0", "1"}

    md = (tmp_path / "cnn_rl_baseline.md").read_text()
    assert "| NumberLine | 87.1 |" in md and "Machine:" in md and "30 held-out episodes" in md
    assert (tmp_path / "cnn_rl_baseline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
