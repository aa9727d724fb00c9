"""benchmarks/demo_run.py: the demo's own timings and closing comparison become the results file,
and the README quotes that file's numbers (no figure typed by hand)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import demo_run

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "demo_run.csv"

COMPARISON = """method,env_id,episodes,success_rate,ci95_low,ci95_high,invalid_rate
random,gym_cards/NumberLine-v0,200,0.625,0.5559,0.6894,0.0
warm start,gym_cards/NumberLine-v0,200,0.585,0.5157,0.6509,0.01
trained,gym_cards/NumberLine-v0,200,0.82,0.7613,0.8672,0.0
expert,gym_cards/NumberLine-v0,200,1.0,0.9812,1.0,0.0
"""


def fake_run(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "timings.json").write_text(json.dumps({
        "stages": {"alignment": 61.2, "SFT": 209.9, "PPO": 150.4, "comparison": 118.0}, "total_seconds": 545.5,
        "machine": {"cpu_cores": 2, "usable_cores": 2, "torch_threads": 1, "platform": "Linux x86_64",
                    "torch": "2.13.0+cpu", "cuda_device": None}}))
    (run_dir / "held_out_comparison.csv").write_text(COMPARISON)
    (run_dir / "learning_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def test_results_hold_the_stages_the_comparison_and_the_machine(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir)
    timings, comparison = demo_run.read_run(run_dir)
    rows = demo_run.result_rows(timings, comparison)
    paths = demo_run.write_results(rows, timings, comparison, run_dir, tmp_path / "results", "gym_cards/NumberLine-v0")
    written = list(csv.DictReader(paths["csv"].open()))
    assert [(row["kind"], row["name"]) for row in written][:5] == [
        ("stage", "alignment"), ("stage", "SFT"), ("stage", "PPO"), ("stage", "comparison"), ("stage", "total")]
    assert written[4]["seconds"] == "545.5"
    trained = next(row for row in written if row["name"] == "trained")
    assert (trained["success_rate"], trained["ci95_low"], trained["ci95_high"]) == ("0.82", "0.7613", "0.8672")
    markdown = paths["md"].read_text()
    assert "| **total** (start to end of the command) | **546** | **9.1** |" in markdown
    assert "| trained | 82.0 | [76.1, 86.7] | 0.0 |" in markdown
    assert "2 CPU cores (2 usable), 1 torch thread, Linux x86_64, torch 2.13.0+cpu, no GPU" in markdown
    assert paths["png"].read_bytes() == b"\x89PNG\r\n\x1a\n"
    loaded = demo_run.write_results(rows, timings, comparison, run_dir, tmp_path / "r2", "gym_cards/NumberLine-v0",
                                    loads=[3.0, 5.0])
    assert "load average while it ran (sampled every 10 s): 4.0 on average, 3.0 to 5.0" in loaded["md"].read_text()


def quoted_numbers() -> dict[str, str]:
    """What the README must say, from the committed results."""
    rows = {row["name"]: row for row in csv.DictReader(RESULTS.open())}

    def rate(name: str) -> str:
        row = rows[name]
        low, high = 100 * float(row["ci95_low"]), 100 * float(row["ci95_high"])
        return f"{100 * float(row['success_rate']):.1f}% [{low:.1f}, {high:.1f}]"

    total = float(rows["total"]["seconds"])
    return {
        "warm start": rate("warm start"), "trained": rate("trained"), "blank": rate("trained (blank image)"),
        "random": f"{100 * float(rows['random']['success_rate']):.1f}%",
        "total": f"{total / 60:.1f} minutes ({total:.0f} s",
    }


def test_the_readme_quotes_the_committed_demo_results() -> None:
    readme = (REPO / "README.md").read_text()
    for name, text in quoted_numbers().items():
        assert text in readme, f"README does not quote the demo's {name}: {text}"
    assert "benchmarks/results/demo_run.md" in readme


@pytest.mark.slow
def test_the_benchmark_runs_the_demo_end_to_end(tmp_path: Path) -> None:
    quick = ["--num_envs", "2", "--num_steps", "2", "--total_timesteps", "8", "--max_new_tokens", "8",
             "--sft_num_demos", "4", "--sft_epochs", "1", "--ppo_epochs", "1", "--mini_batch_size", "2",
             "--align_projector_steps", "1", "--align_language_steps", "1", "--align_num_examples", "16",
             "--final_eval_episodes", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.demo_run", "--out-dir", str(tmp_path), "--", *quick],
        cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[0:" in result.stdout and "] PPO: 2 updates" in result.stdout  # the demo's own stage lines
    rows = list(csv.DictReader((tmp_path / "demo_run.csv").open()))
    assert [row["name"] for row in rows if row["kind"] == "stage"] == ["alignment", "SFT", "PPO", "comparison", "total"]
    assert [row["name"] for row in rows if row["kind"] == "comparison"] == [
        "random", "warm start", "trained", "trained (blank image)", "trained (other-state image)", "expert"]
    assert (tmp_path / "demo_run.png").read_bytes()[:4] == b"\x89PNG"
