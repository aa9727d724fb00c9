"""benchmarks/cnn_rl_baseline.py: flags, curve statistics, and a tiny real end-to-end run."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cnn_rl_baseline import (
    LONGER_BUDGETS,
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
        (["--longer-budgets", "NumberLine"], "expected GAME=STEPS"),
        (["--longer-budgets", "Poker=50000"], "--longer-budgets must name games"),
        (["--longer-budgets", "NumberLine=10000"], "must be more than --total-steps (15000)"),
    ],
)
def test_bad_flags_get_one_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_defaults_are_the_paper_budget_plus_a_longer_numberline_run() -> None:
    config = parse_args([])
    assert config == CnnBaselineConfig()
    assert config.total_steps == 15000
    assert config.envs == list(PAPER_CNN_RL_SUCCESS)
    assert not config.number_line_drawing  # the published text-only NumberLine image
    assert config.longer_budgets == LONGER_BUDGETS == {"NumberLine": 50000}
    assert config.training_runs() == [
        ("NumberLine", "paper", 15000), ("NumberLine", "longer", 50000),
        ("EZPoints", "paper", 15000), ("Points24", "paper", 15000), ("Blackjack", "paper", 15000),
    ]  # fmt: skip


def test_longer_budgets_flag() -> None:
    assert parse_args(["--longer-budgets"]).training_runs() == [(name, "paper", 15000) for name in PAPER_CNN_RL_SUCCESS]
    config = parse_args(["--envs", "Blackjack", "--longer-budgets", "Blackjack=30000", "NumberLine=50000"])
    assert config.training_runs() == [("Blackjack", "paper", 15000), ("Blackjack", "longer", 30000)]


def tiny_run_argv(out_dir: Path) -> list[str]:
    return [
        "--envs", "NumberLine", "--total-steps", "128", "--longer-budgets", "NumberLine=256", "--n-envs", "2",
        "--n-steps", "64",
        "--batch-size", "64", "--n-epochs", "1", "--frame-size", "36", "--eval-episodes", "30",
        "--eval-envs", "8", "--eval-policy", "both", "--seed", "3", "--out-dir", str(out_dir), "--no-progress",
    ]  # fmt: skip


def test_tiny_end_to_end_run_writes_sane_results_and_is_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("stable_baselines3")
    scratch = tmp_path / "tempdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where SB3's default logger makes SB3-<date>/
    assert main(tiny_run_argv(tmp_path)) == 0
    assert list(scratch.glob("SB3-*")) == []  # no log folders left behind
    assert main(tiny_run_argv(tmp_path / "again")) == 0
    # Same seed, same training episodes and the same held-out outcomes.
    assert (tmp_path / "cnn_rl_baseline_curves.csv").read_text() == (
        tmp_path / "again" / "cnn_rl_baseline_curves.csv"
    ).read_text()
    with open(tmp_path / "again" / "cnn_rl_baseline.csv") as handle:
        rerun = [(r["eval_policy"], r["success"]) for r in csv.DictReader(handle)]

    with open(tmp_path / "cnn_rl_baseline.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["env"], r["budget"], r["train_steps"], r["eval_policy"]) for r in rows] == [
        ("NumberLine", "paper", "128", "sampled"), ("NumberLine", "paper", "128", "greedy"),
        ("NumberLine", "longer", "256", "sampled"), ("NumberLine", "longer", "256", "greedy"),
    ]  # fmt: skip
    for row in rows:
        assert float(row["paper_success"]) == 87.1
        assert int(row["eval_episodes"]) == 30
        assert row["number_line_drawing"] == "0"
        assert 0.0 <= float(row["ci95_low"]) <= float(row["success"]) <= float(row["ci95_high"]) <= 100.0
        assert int(row["train_episodes"]) > 0
    assert [(r["eval_policy"], r["success"]) for r in rows] == rerun

    with open(tmp_path / "cnn_rl_baseline_curves.csv") as handle:
        curves = list(csv.DictReader(handle))
    for budget, steps_budget in (("paper", 128), ("longer", 256)):
        curve = [r for r in curves if r["budget"] == budget]
        row = next(r for r in rows if r["budget"] == budget)
        assert len(curve) == int(row["train_episodes"])
        steps = [int(r["env_step"]) for r in curve]
        assert steps == sorted(steps) and 0 < steps[-1] <= steps_budget
        # NumberLine episodes last at most 2 * max_position = 10 steps.
        assert all(1 <= int(r["length"]) <= 10 for r in curve)
        assert {r["success"] for r in curve} <= {"0", "1"}
    # Same seed and a constant learning rate: the longer run starts exactly like the paper-budget run.
    paper = [(r["env_step"], r["success"], r["length"]) for r in curves if r["budget"] == "paper"]
    longer = [(r["env_step"], r["success"], r["length"]) for r in curves if r["budget"] == "longer"]
    assert longer[: len(paper)] == paper

    md = (tmp_path / "cnn_rl_baseline.md").read_text()
    assert "| NumberLine | paper | 128 | 87.1 |" in md and "| NumberLine | longer | 256 | 87.1 |" in md
    assert "Machine:" in md and "30 held-out episodes" in md
    assert "Command: `python -m benchmarks.cnn_rl_baseline --envs NumberLine --total-steps 128 " in md
    assert "NumberLine image seen by the CNN: only the text 'Target: x' and 'Current: y', as published." in md
    assert (tmp_path / "cnn_rl_baseline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
