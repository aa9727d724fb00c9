"""benchmarks/eval_throughput.py, shrunk: it times each N on the same episodes and writes its files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_eval_throughput_writes_markdown_csv_and_plot(tmp_path: Path, torch_single_thread: None) -> None:
    from benchmarks import eval_throughput

    code = eval_throughput.main(["--num-envs", "1", "4", "--episodes", "4", "--single-episodes", "2",
                                 "--max-new-tokens", "4", "--out-dir", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "eval_throughput.csv").open()))
    assert [int(row["num_envs"]) for row in rows] == [1, 4]
    # N = 1 timed 2 episodes, scaled to the 4 that N = 4 played, which were the same games.
    assert [int(row["timed_episodes"]) for row in rows] == [2, 4]
    assert rows[0]["env_steps"] == rows[1]["env_steps"] and rows[0]["same_episodes"] == "True"
    assert float(rows[0]["speedup"]) == 1.0 and float(rows[1]["speedup"]) > 0
    markdown = (tmp_path / "eval_throughput.md").read_text()
    assert "| 4 |" in markdown and "the N = 1 episodes matched move for move" in markdown
    assert (tmp_path / "eval_throughput.png").stat().st_size > 0
