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


def test_tiny_vlm_readout_reports_unseen_states_controls_and_the_models_identity(
    tmp_path: Path, torch_single_thread: None
) -> None:
    """benchmarks/tiny_vlm_readout.py --quick: every row names its model, the commit, and disjoint state counts."""
    from benchmarks import tiny_vlm_readout
    from vlm_agent.demo.alignment import model_identity

    assert tiny_vlm_readout.main(["--quick", "--seeds", "0", "--work-dir", str(tmp_path / "w"),
                                  "--out-dir", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "tiny_vlm_readout_quick.csv").open()))
    assert [r["field"] for r in rows] == ["current number", "target number"]
    identity = model_identity(tmp_path / "w" / "aligned_seed0")
    for row in rows:
        assert row["model"] == identity and row["commit"] and row["commit"] != "unknown"
        assert int(row["train_states"]) > 50 and 0 < int(row["eval_states"]) <= 8
        for column in ("image_accuracy", "blank_accuracy", "other_state_accuracy", "chance"):
            assert 0.0 <= float(row[column]) <= 1.0
    markdown = (tmp_path / "tiny_vlm_readout_quick.md").read_text()
    assert "| other state |" in markdown and '{"max_position": 9}' in markdown
    assert "Command: `python -m benchmarks.tiny_vlm_readout --quick --seeds 0" in markdown


def test_tiny_vlm_readout_passes_the_stage_one_options_and_says_so(tmp_path: Path, torch_single_thread: None) -> None:
    """--quiet-image-tokens --ordered-slot-targets reach the alignment (its summary) and the results text."""
    import json

    from benchmarks import tiny_vlm_readout

    assert tiny_vlm_readout.main(["--quick", "--seeds", "0", "--projector-fit", "--quiet-image-tokens",
                                  "--ordered-slot-targets", "--work-dir", str(tmp_path / "w"),
                                  "--out-dir", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "w" / "aligned_seed0" / "align_summary.json").read_text())["config"]
    assert config["quiet_image_tokens"] is True and config["ordered_slot_targets"] is True
    markdown = (tmp_path / "tiny_vlm_readout_quick.md").read_text()
    assert "the other image tokens sent to zero" in markdown and "a value token order kept" in markdown
