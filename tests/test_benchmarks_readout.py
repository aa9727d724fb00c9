"""benchmarks/readout_bottleneck.py, shrunk: every condition trains, is measured and reported."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_readout_bottleneck_runs_every_condition_and_writes_its_files(tmp_path: Path, torch_single_thread: None) -> None:
    from benchmarks import readout_bottleneck

    assert readout_bottleneck.main(["--quick", "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "readout_bottleneck_quick.csv").open()))
    for condition in readout_bottleneck.CONDITIONS:
        steps = [int(r["step"]) for r in rows if r["condition"] == condition]
        assert steps == [0, 2, 4], (condition, steps)
    start = {r["condition"]: float(r["held_out_loss"]) for r in rows if r["step"] == "0"}
    end = {r["condition"]: float(r["held_out_loss"]) for r in rows if r["step"] == "4"}
    assert all(end[c] < start[c] for c in start), "four steps already lower every condition's loss"
    markdown = (tmp_path / "readout_bottleneck_quick.md").read_text()
    assert all(f"| {c} |" in markdown for c in readout_bottleneck.CONDITIONS)
    # The random model's image tokens already tell the target number apart (the eyes see).
    assert "target number 100%" in markdown
    assert (tmp_path / "readout_bottleneck_quick.png").stat().st_size > 0
