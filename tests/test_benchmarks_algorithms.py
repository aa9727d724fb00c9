"""benchmarks/algorithms.py: rows of concurrent runs merge into one results folder, and the report
and plot are built from the CSVs alone."""

from __future__ import annotations

from pathlib import Path

from benchmarks import algorithms


def row(algorithm: str, seed: str, success: float) -> dict:
    return {"setting": "numberline_image", "env_id": "gym_cards/NumberLine-v0", "algorithm": algorithm,
            "seed": seed, "env_steps": 64, "updates": 2, "after_success": success, "after_ci_low": success - 0.1,
            "after_ci_high": success + 0.1, "after_invalid": 0.0, "after_return": 0.0, "eval_episodes": 8,
            "train_seconds": 1.0, "seconds_per_update": 0.5, "anchor_share": "" if algorithm == "ppo" else 0.5,
            "value_head_parameters": 10 if algorithm == "ppo" else 0, "peak_rss_mb": 100.0, "warm_start": ""}


def curve(algorithm: str, seed: str, steps: list[int], rates: list[float]) -> list[dict]:
    return [{"setting": "numberline_image", "algorithm": algorithm, "seed": seed, "global_step": step,
             "success_rate": rate, "episodes": 4} for step, rate in zip(steps, rates)]


def test_runs_writing_one_folder_keep_each_others_rows(tmp_path: Path) -> None:
    rows_path, curves_path = tmp_path / "algorithms.csv", tmp_path / "algorithms_curves.csv"
    # Two benchmarks started from the same (empty) folder, each with its own run.
    algorithms.save_rows(rows_path, curves_path, [row("ppo", "0", 0.9)], curve("ppo", "0", [32, 64], [0.5, 0.9]))
    algorithms.save_rows(rows_path, curves_path, [row("gigpo", "0", 0.7)], curve("gigpo", "0", [40], [0.7]))
    assert sorted(r["algorithm"] for r in algorithms.read_csv(rows_path)) == ["gigpo", "ppo"]
    assert len(algorithms.read_csv(curves_path)) == 3
    # A rerun of a run replaces its row and its curve.
    merged, curves = algorithms.save_rows(rows_path, curves_path, [row("ppo", "0", 0.5)],
                                          curve("ppo", "0", [64], [0.5]))
    assert sorted((r["algorithm"], float(r["after_success"])) for r in merged) == [("gigpo", 0.7), ("ppo", 0.5)]
    assert [(p["algorithm"], p["global_step"]) for p in curves] == [("gigpo", "40"), ("ppo", 64)]


def test_a_run_without_resume_replaces_every_row_of_its_setting(tmp_path: Path) -> None:
    rows_path, curves_path = tmp_path / "algorithms.csv", tmp_path / "algorithms_curves.csv"
    algorithms.save_rows(rows_path, curves_path, [row("ppo", "0", 0.9), row("ppo", "1", 0.8)],
                         curve("ppo", "1", [32], [0.8]))
    # A rerun of seed 0 alone, without --resume: seed 1's row and curve from the earlier run go.
    merged, curves = algorithms.save_rows(rows_path, curves_path, [row("ppo", "0", 0.7)], [],
                                          frozenset({"numberline_image"}))
    assert [(r["seed"], float(r["after_success"])) for r in algorithms.read_csv(rows_path)] == [("0", 0.7)]
    assert [r["seed"] for r in merged] == ["0"] and curves == [] and algorithms.read_csv(curves_path) == []


def test_the_report_is_built_from_the_csvs(tmp_path: Path) -> None:
    rows = [row("gigpo", "1", 0.6), row("ppo", "0", 0.9), row("gigpo", "0", 0.8), row("warm start", "", 0.5),
            row("random", "", 0.4)]
    rows[1].update(blank_success=0.45, other_success=0.5)
    curves = curve("ppo", "0", [32, 64], [0.5, 0.9]) + curve("gigpo", "0", [40, 70], [0.6, 0.8]) \
        + curve("gigpo", "1", [30, 64], [0.5, 0.6])
    algorithms.save_rows(tmp_path / "algorithms.csv", tmp_path / "algorithms_curves.csv", rows, curves)
    assert algorithms.main(["--report-only", "--out-dir", str(tmp_path)]) == 0
    page = (tmp_path / "algorithms.md").read_text()
    table = [line.split(" | ")[0:2] for line in page.splitlines() if line.startswith("| ") and "[" in line]
    assert table == [["| random", ""], ["| warm start", ""], ["| ppo", "0"], ["| gigpo", "0"], ["| gigpo", "1"]]
    assert "| 90.0 [80.0, 100.0] | 45.0 | 50.0 |" in page  # PPO's controls: blank image, other state
    header = next(line for line in page.splitlines() if line.startswith("| algorithm | seed |"))
    assert all(line.count("|") == header.count("|") for line in page.splitlines() if line.startswith("| ppo | 0"))
    assert "| gigpo | 70.0 | +20.0 | 2 |" in page and "| ppo | 90.0 | +40.0 | 1 |" in page
    assert "rounds of 16 groups x 4 episodes" in page
    assert (tmp_path / "algorithms.png").stat().st_size > 0


def test_a_row_given_without_curve_points_keeps_its_curve(tmp_path: Path) -> None:
    # --add-controls writes a run's row again, with its controls, while another benchmark adds a run.
    rows_path, curves_path = tmp_path / "algorithms.csv", tmp_path / "algorithms_curves.csv"
    algorithms.save_rows(rows_path, curves_path, [row("ppo", "0", 0.9)], curve("ppo", "0", [32, 64], [0.5, 0.9]))
    algorithms.save_rows(rows_path, curves_path, [row("gigpo", "0", 0.7)], curve("gigpo", "0", [40], [0.7]))
    with_controls = {**row("ppo", "0", 0.9), "blank_success": 0.5, "other_success": 0.55}
    merged, curves = algorithms.save_rows(rows_path, curves_path, [with_controls], [])
    assert {(r["algorithm"], r["blank_success"]) for r in merged} == {("gigpo", ""), ("ppo", 0.5)}
    assert sorted((p["algorithm"], p["global_step"]) for p in curves) == [("gigpo", "40"), ("ppo", "32"), ("ppo", "64")]


def test_add_controls_keeps_every_row_and_restores_a_missing_curve(tmp_path: Path) -> None:
    # Rows that already have their controls, one of them without its curve; the run folder holds its metrics.
    rows = [{**row("ppo", "0", 0.9), "blank_success": 0.5, "other_success": 0.55}, row("warm start", "", 0.5),
            {**row("gigpo", "1", 0.8), "blank_success": 0.5, "other_success": 0.6},
            {**row("ppo", "0", 0.6), "setting": "ezpoints_text"}]
    algorithms.save_rows(tmp_path / "algorithms.csv", tmp_path / "algorithms_curves.csv", rows,
                         curve("gigpo", "1", [40], [0.8]))
    run = tmp_path / "work" / "numberline_image__ppo__0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        '{"global_step": 32, "charts/success_rate": 0.5, "charts/episodes": 4}\n'
        '{"global_step": 64, "charts/success_rate": 0.75, "charts/episodes": 4}\n')
    assert algorithms.main(["--add-controls", "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path)]) == 0
    kept = algorithms.read_csv(tmp_path / "algorithms.csv")
    assert sorted((r["setting"], r["algorithm"], r["seed"]) for r in kept) == [
        ("ezpoints_text", "ppo", "0"), ("numberline_image", "gigpo", "1"), ("numberline_image", "ppo", "0"),
        ("numberline_image", "warm start", "")]
    points = algorithms.read_csv(tmp_path / "algorithms_curves.csv")
    assert sorted((p["algorithm"], p["global_step"], p["success_rate"]) for p in points) == [
        ("gigpo", "40", "0.8"), ("ppo", "32", "0.5"), ("ppo", "64", "0.75")]


def test_each_setting_trains_every_algorithm_for_its_own_budget(tmp_path: Path) -> None:
    args = algorithms.parse_args([])
    for name, budget in (("numberline_image", 2048), ("ezpoints_text", 2048), ("ezpoints_text_6k", 6144)):
        setting = algorithms.SETTINGS[name]
        for algorithm in algorithms.ALGORITHMS:
            config = algorithms.config_for(args, setting, algorithm, 0, tmp_path / "model", tmp_path / "run")
            assert config.total_timesteps == budget, (name, algorithm)
    # --env-steps sets every setting's budget.
    override = algorithms.parse_args(["--env-steps", "512"])
    config = algorithms.config_for(override, algorithms.SETTINGS["ezpoints_text_6k"], "gigpo", 0, tmp_path / "m",
                                   tmp_path / "r")
    assert config.total_timesteps == 512
