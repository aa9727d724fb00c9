"""benchmarks/cnn_rl_baseline.py: flags, training runs x seeds, result tables, and a tiny real end-to-end run."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cnn_rl_baseline import (
    LEARNING_RATE_VARIANTS,
    PAPER_CNN_RL_SUCCESS,
    CnnBaselineConfig,
    HeldOutEvaluation,
    RunResult,
    TrainingEpisode,
    TrainingRun,
    main,
    mean_and_per_seed,
    noise_only_peak,
    parse_args,
    peak_success,
    rolling_mean,
    train,
    write_results,
)
from benchmarks.make_readme import available_cores
from vlm_agent.evaluation.statistics import wilson_interval


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
        (["--workers", "0"], "--workers must be a positive"),
        (["--frame-size", "20"], "--frame-size must be at least 36"),
        (["--n-envs", "3", "--n-steps", "10", "--batch-size", "7"], "--batch-size"),
        (["--eval-policy", "argmax"], "--eval-policy must be one of"),
        (["--seeds"], "expected at least one argument"),
        (["--seeds", "1", "2", "1"], "--seeds must be unique"),
        (["--learning-rate", "0"], "--learning-rate must be a positive finite number"),
        (["--longer-budgets", "NumberLine"], "expected GAME=STEPS"),
        (["--longer-budgets", "Poker=50000"], "--longer-budgets must name games"),
        (["--longer-budgets", "NumberLine=10000"], "must be more than --total-steps (15000)"),
        (["--learning-rate-variants", "NumberLine"], "expected GAME=LR[,LR...]"),
        (["--learning-rate-variants", "NumberLine=fast"], "expected GAME=LR[,LR...]"),
        (["--learning-rate-variants", "NumberLine=1e-3,"], "expected GAME=LR[,LR...]"),
        (["--learning-rate-variants", "Poker=1e-3"], "--learning-rate-variants must name games"),
        (["--learning-rate-variants", "NumberLine=-1e-3"], "must be positive finite numbers, got -0.001"),
        (["--learning-rate-variants", "NumberLine=nan"], "must be positive finite numbers, got nan"),
        (["--learning-rate-variants", "NumberLine=1e-3,0.001"], "learning rates must be unique"),
        (["--learning-rate-variants", "NumberLine=1e-3,5e-4"], "NumberLine=0.0005 equals --learning-rate (0.0005)"),
        (["--learning-rate", "1e-3", "--learning-rate-variants", "Blackjack=0.001"], "equals --learning-rate (0.001)"),
        (["--learning-rate-variants", "NumberLine=1e-3", "NumberLine=2e-3"], "names NumberLine more than once"),
    ],
)
def test_bad_flags_get_one_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_config_checks_seeds_when_built_directly() -> None:
    with pytest.raises(ValueError, match="--seeds must name at least one seed"):
        CnnBaselineConfig(seeds=[])
    with pytest.raises(ValueError, match="--seeds must be unique"):
        CnnBaselineConfig(seeds=[0, 0])
    with pytest.raises(ValueError, match="equals --learning-rate"):
        CnnBaselineConfig(learning_rate=1e-3)  # the default NumberLine variants include 1e-3


def test_defaults_are_five_seeds_at_lr_5e4_plus_numberline_learning_rates() -> None:
    config = parse_args([])
    assert config == CnnBaselineConfig()
    assert config.total_steps == 15000
    assert config.envs == list(PAPER_CNN_RL_SUCCESS)
    assert config.seeds == [0, 1, 2, 3, 4]
    assert config.learning_rate == 5e-4
    assert config.learning_rate_variants == LEARNING_RATE_VARIANTS == {"NumberLine": [2.5e-4, 1e-3]}
    assert config.longer_budgets == {}
    assert config.workers == available_cores() >= 1
    assert not config.number_line_drawing  # the published text-only NumberLine image
    runs = config.training_runs()
    assert runs == [
        TrainingRun("NumberLine", "paper", 15000, 5e-4), TrainingRun("NumberLine", "paper", 15000, 2.5e-4, True),
        TrainingRun("NumberLine", "paper", 15000, 1e-3, True), TrainingRun("EZPoints", "paper", 15000, 5e-4),
        TrainingRun("Points24", "paper", 15000, 5e-4), TrainingRun("Blackjack", "paper", 15000, 5e-4),
    ]  # fmt: skip
    assert [run.label for run in runs] == ["paper", "paper, lr 0.00025", "paper, lr 0.001", "paper", "paper", "paper"]
    jobs = config.jobs()
    assert len(jobs) == 6 * 5
    assert jobs[:6] == [(runs[0], seed) for seed in range(5)] + [(runs[1], 0)]


def test_training_runs_order_paper_then_learning_rates_then_longer() -> None:
    config = parse_args([
        "--envs", "Blackjack", "NumberLine", "--seeds", "7", "2",
        "--learning-rate-variants", "NumberLine=1e-3,2.5e-4", "Blackjack=1e-4", "EZPoints=1e-3",
        "--longer-budgets", "NumberLine=30000", "Points24=50000",
    ])  # fmt: skip
    runs = config.training_runs()
    assert [(run.game, run.label, run.total_steps, run.learning_rate) for run in runs] == [
        ("Blackjack", "paper", 15000, 5e-4), ("Blackjack", "paper, lr 0.0001", 15000, 1e-4),
        ("NumberLine", "paper", 15000, 5e-4), ("NumberLine", "paper, lr 0.001", 15000, 1e-3),
        ("NumberLine", "paper, lr 0.00025", 15000, 2.5e-4), ("NumberLine", "longer", 30000, 5e-4),
    ]  # fmt: skip  (games outside --envs are ignored; the longer run keeps the main learning rate)
    assert config.jobs() == [(run, seed) for run in runs for seed in (7, 2)]


def test_flags_with_no_value_turn_the_extra_runs_off() -> None:
    config = parse_args(["--learning-rate-variants"])
    assert config.learning_rate_variants == {}
    assert config.training_runs() == [TrainingRun(name, "paper", 15000, 5e-4) for name in PAPER_CNN_RL_SUCCESS]
    config = parse_args(["--envs", "Blackjack", "--longer-budgets", "Blackjack=30000", "NumberLine=50000"])
    assert config.training_runs() == [
        TrainingRun("Blackjack", "paper", 15000, 5e-4), TrainingRun("Blackjack", "longer", 30000, 5e-4)
    ]  # fmt: skip


def test_noise_only_peak_is_the_expected_peak_of_a_constant_policy() -> None:
    assert noise_only_peak(0.0, 5000) == 0.0 and noise_only_peak(1.0, 5000) == 1.0
    assert noise_only_peak(0.5, 40, repeats=400) == pytest.approx(0.5, abs=0.02)  # fewer than a window: the mean
    # One repeat is peak_success of the same draws.
    draws = np.random.default_rng(0).random((1, 700)) < 0.4
    episodes = [TrainingEpisode(i, bool(d), 0.0, 1) for i, d in enumerate(draws[0])]
    assert noise_only_peak(0.4, 700, repeats=1) == pytest.approx(peak_success(episodes))
    # Window noise lifts the peak of a constant 38% far above 38% over a long run, and more the longer the run.
    long_run, short_run = noise_only_peak(0.38, 14000), noise_only_peak(0.38, 500)
    assert 0.50 < long_run < 0.58 and 0.38 < short_run < long_run


def test_mean_and_per_seed() -> None:
    assert mean_and_per_seed([67.4, 77.8, 92.0]) == "79.1 (67.4, 77.8, 92.0)"
    assert mean_and_per_seed([65.0]) == "65.0"


def synthetic_result(run: TrainingRun, seed: int, peak_successes: int, held_out: tuple[int, ...]) -> RunResult:
    """A run whose 200 training episodes peak at ``peak_successes`` of 100 and whose held-out
    evaluations have ``held_out`` successes of 1000 (sampled, then greedy)."""
    flags = [True] * peak_successes + [False] * (200 - peak_successes)
    episodes = [TrainingEpisode(10 * (i + 1), flag, float(flag), 3) for i, flag in enumerate(flags)]
    evaluations = [HeldOutEvaluation(p, s, 1000, 1.0) for p, s in zip(("sampled", "greedy"), held_out, strict=False)]
    return RunResult(run, seed, 15360, 100.0 + seed, episodes, evaluations)


def test_tables_aggregate_seeds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    config = CnnBaselineConfig(
        envs=["NumberLine", "Blackjack"], seeds=[0, 1, 2], learning_rate_variants={"NumberLine": [1e-3]},
        eval_policy="both", out_dir=tmp_path, workers=1,
    )  # fmt: skip
    paper, variant, blackjack = config.training_runs()
    assert variant.label == "paper, lr 0.001"
    results = [
        synthetic_result(paper, 0, 80, (674, 500)), synthetic_result(paper, 1, 83, (778, 600)),
        synthetic_result(paper, 2, 86, (920, 700)),
        synthetic_result(variant, 0, 100, (1000, 1000)), synthetic_result(variant, 1, 99, (998, 999)),
        synthetic_result(variant, 2, 100, (1000, 1000)),
        synthetic_result(blackjack, 0, 40, (380, 300)), synthetic_result(blackjack, 1, 42, (390, 310)),
        synthetic_result(blackjack, 2, 50, (400, 320)),
    ]  # fmt: skip
    write_results(config, results, "python -m benchmarks.cnn_rl_baseline --test")

    lines = (tmp_path / "cnn_rl_baseline.md").read_text().splitlines()
    assert lines[0] == (
        "| game | run | lr | train steps | seeds | paper CNN+RL (peak) | peak training success, mean (per seed) | "
        "held-out sampled, mean (per seed) | pooled 95% interval | held-out greedy, mean (per seed) | "
        "pooled 95% interval | train time per run |"
    )
    low, high = wilson_interval(674 + 778 + 920, 3000)
    g_low, g_high = wilson_interval(1800, 3000)
    assert lines[2] == (
        f"| NumberLine | paper | 0.0005 | 15360 | 0, 1, 2 | 87.1 | 83.0 (80.0, 83.0, 86.0) | 79.1 (67.4, 77.8, 92.0) | "
        f"[{100 * low:.1f}, {100 * high:.1f}] | 60.0 (50.0, 60.0, 70.0) | [{100 * g_low:.1f}, {100 * g_high:.1f}] | "
        "101 s |"
    )
    assert lines[3].startswith("| NumberLine | paper, lr 0.001 | 0.001 | 15360 | 0, 1, 2 | 87.1 | 99.7 (100.0, 99.0")
    assert lines[4].startswith("| Blackjack | paper | 0.0005 | 15360 | 0, 1, 2 | 38.8 | 44.0 (40.0, 42.0, 50.0) |")
    text = "\n".join(lines)
    noise = 100 * np.mean([noise_only_peak(rate, 200) for rate in (0.674, 0.778, 0.92)])
    assert (
        "- NumberLine: mean peak training success 83.0 vs paper 87.1 (-4.1 points); held-out 79.1 (-8.0); "
        f"noise-only peak {noise:.1f}; over 3 seeds."
    ) in text
    assert "- Blackjack: mean peak training success 44.0 vs paper 38.8 (+5.2 points); held-out 39.0 (+0.2);" in text
    assert "NumberLine rows at other learning rates show how much the number depends on it" in text
    assert "Command: `python -m benchmarks.cnn_rl_baseline --test`" in text

    with open(tmp_path / "cnn_rl_baseline.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["env"], r["budget"], r["learning_rate"], r["seed"], r["eval_policy"]) for r in rows] == [
        (env, budget, lr, seed, policy)
        for env, budget, lr in (("NumberLine", "paper", "0.0005"), ("NumberLine", "paper, lr 0.001", "0.001"),
                                ("Blackjack", "paper", "0.0005"))
        for seed in ("0", "1", "2")
        for policy in ("sampled", "greedy")
    ]  # fmt: skip
    assert (rows[1]["eval_policy"], rows[1]["success"], rows[1]["peak_train_success"]) == ("greedy", "50.00", "80.00")
    with open(tmp_path / "cnn_rl_baseline_curves.csv") as handle:
        curves = list(csv.DictReader(handle))
    assert len(curves) == 9 * 200
    assert curves[200] == {
        "env": "NumberLine", "budget": "paper", "learning_rate": "0.0005", "seed": "1", "env_step": "10",
        "success": "1", "return": "1.0", "length": "3",
    }  # fmt: skip
    assert (tmp_path / "cnn_rl_baseline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_uses_the_runs_learning_rate() -> None:
    pytest.importorskip("stable_baselines3")
    config = CnnBaselineConfig(
        envs=["NumberLine"], n_envs=2, n_steps=32, batch_size=64, n_epochs=1, frame_size=36, progress=False, workers=1
    )
    model, episodes, _ = train(config, TrainingRun("NumberLine", "paper", 64, 1e-3, True), seed=5, progress=False)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert model.num_timesteps == 64 and episodes and episodes[-1].env_step <= 64


def tiny_run_argv(out_dir: Path, workers: int) -> list[str]:
    return [
        "--envs", "NumberLine", "--total-steps", "256", "--learning-rate-variants", "NumberLine=1e-3",
        "--longer-budgets", "NumberLine=384", "--seeds", "3", "4", "--workers", str(workers), "--n-envs", "2",
        "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--frame-size", "36", "--eval-episodes", "30",
        "--eval-envs", "8", "--eval-policy", "both", "--out-dir", str(out_dir), "--no-progress",
    ]  # fmt: skip


def test_tiny_end_to_end_run_writes_sane_results_independent_of_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("stable_baselines3")
    scratch = tmp_path / "tempdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where SB3's default logger makes SB3-<date>/
    monkeypatch.setenv("TMPDIR", str(scratch))  # the same in the worker processes
    parallel, serial = tmp_path / "parallel", tmp_path / "serial"
    assert main(tiny_run_argv(parallel, workers=2)) == 0
    assert main(tiny_run_argv(serial, workers=1)) == 0
    assert list(scratch.glob("SB3-*")) == []  # no log folders left behind

    # Every job is seeded on its own: the same training episodes and held-out outcomes in 2 worker
    # processes (in order of completion) as one after the other in this process.
    assert (parallel / "cnn_rl_baseline_curves.csv").read_text() == (serial / "cnn_rl_baseline_curves.csv").read_text()
    outcome_columns = ("env", "budget", "learning_rate", "seed", "train_steps", "eval_policy", "success", "ci95_low",
                       "ci95_high", "peak_train_success", "train_episodes")  # fmt: skip
    tables = {}
    for out in (parallel, serial):
        with open(out / "cnn_rl_baseline.csv") as handle:
            tables[out] = list(csv.DictReader(handle))
    assert [[r[c] for c in outcome_columns] for r in tables[parallel]] == [
        [r[c] for c in outcome_columns] for r in tables[serial]
    ]
    rows = tables[parallel]
    assert [(r["budget"], r["learning_rate"], r["seed"], r["train_steps"], r["eval_policy"]) for r in rows] == [
        (budget, lr, seed, steps, policy)
        for budget, lr, steps in (("paper", "0.0005", "256"), ("paper, lr 0.001", "0.001", "256"),
                                  ("longer", "0.0005", "384"))
        for seed in ("3", "4")
        for policy in ("sampled", "greedy")
    ]  # fmt: skip
    for row in rows:
        assert row["env"] == "NumberLine"
        assert float(row["paper_success"]) == 87.1
        assert int(row["eval_episodes"]) == 30
        assert row["number_line_drawing"] == "0"
        assert 0.0 <= float(row["ci95_low"]) <= float(row["success"]) <= float(row["ci95_high"]) <= 100.0
        assert int(row["train_episodes"]) > 0

    with open(parallel / "cnn_rl_baseline_curves.csv") as handle:
        curves = list(csv.DictReader(handle))

    def curve(budget: str, seed: str) -> list[tuple[str, str, str]]:
        return [(r["env_step"], r["success"], r["length"]) for r in curves if (r["budget"], r["seed"]) == (budget, seed)]

    for row in rows[::2]:
        episodes = curve(row["budget"], row["seed"])
        assert len(episodes) == int(row["train_episodes"])
        steps = [int(step) for step, _, _ in episodes]
        assert steps == sorted(steps) and 0 < steps[-1] <= int(row["train_steps"])
        # NumberLine episodes last at most 2 * max_position = 10 steps.
        assert all(1 <= int(length) <= 10 for _, _, length in episodes)
        assert {success for _, success, _ in episodes} <= {"0", "1"}
    for seed in ("3", "4"):
        paper = curve("paper", seed)
        # Same seed and a constant learning rate: the longer run starts exactly like the paper-budget run.
        assert curve("longer", seed)[: len(paper)] == paper
        # Another learning rate changes nothing before the first update (2 envs x 64 steps).
        first_rollout = [e for e in paper if int(e[0]) <= 128]
        assert curve("paper, lr 0.001", seed)[: len(first_rollout)] == first_rollout
    assert curve("paper", "3") != curve("paper", "4")  # the seed reaches the training envs

    md = (parallel / "cnn_rl_baseline.md").read_text()
    paper_rows = [r for r in rows if r["budget"] == "paper" and r["eval_policy"] == "sampled"]
    sampled = [float(r["success"]) for r in paper_rows]
    successes = sum(round(0.3 * s) for s in sampled)  # 30 episodes per seed
    low, high = wilson_interval(successes, 60)
    assert (
        f"| NumberLine | paper | 0.0005 | 256 | 3, 4 | 87.1 | {mean_and_per_seed([float(r['peak_train_success']) for r in paper_rows])} "
        f"| {mean_and_per_seed(sampled)} | [{100 * low:.1f}, {100 * high:.1f}] |"
    ) in md
    assert "| NumberLine | paper, lr 0.001 | 0.001 | 256 | 3, 4 | 87.1 |" in md
    assert "| NumberLine | longer | 0.0005 | 384 | 3, 4 | 87.1 |" in md
    mean_peak = np.mean([float(r["peak_train_success"]) for r in paper_rows])
    assert f"- NumberLine: mean peak training success {mean_peak:.1f} vs paper 87.1 (" in md
    assert "Machine:" in md and "30 episodes per seed" in md
    assert "Command: `python -m benchmarks.cnn_rl_baseline --envs NumberLine --total-steps 256 " in md
    assert "NumberLine image seen by the CNN: only the text 'Target: x' and 'Current: y', as published." in md

    # --report-only rebuilds the same report from the CSV files, training nothing.
    report = (parallel / "cnn_rl_baseline.md").read_text()
    (parallel / "cnn_rl_baseline.png").unlink()
    assert main([*tiny_run_argv(parallel, workers=2), "--report-only"]) == 0
    assert (parallel / "cnn_rl_baseline.md").read_text() == report
    assert (parallel / "cnn_rl_baseline.png").is_file()
    with pytest.raises(ValueError, match="has no sampled/greedy rows for NumberLine \\(paper\\), seed 5"):
        main([*tiny_run_argv(parallel, workers=2), "--seeds", "5", "--report-only"])
    with pytest.raises(FileNotFoundError, match="--report-only needs the files of a finished run"):
        main([*tiny_run_argv(tmp_path / "empty", workers=1), "--report-only"])
    assert (parallel / "cnn_rl_baseline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
