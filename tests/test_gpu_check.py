"""`benchmarks/gpu_check.py` at tiny size on CPU, so the GPU check cannot rot between GPU runs."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")


def test_gpu_check_runs_at_tiny_size_and_reports_every_number(tmp_path, torch_single_thread) -> None:
    from benchmarks.gpu_check import main

    assert main(["--tiny", "--num_steps", "1", "--output_dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["trainable_parameters"] > 0
    assert 0 < report["generated_tokens"] <= 2 * 8  # 2 envs x 1 step, at most 8 tokens each
    for key in ("generated_tokens_per_second", "update_seconds", "max_abs_log_prob_drift_bfloat16"):
        assert math.isfinite(report[key]) and report[key] >= 0, key
    # float32: the sampler's log-probs and the update's forward agree to rounding (dropout is off)
    assert report["max_abs_log_prob_drift_float32"] < 1e-4
    # one epoch, one optimizer step (both mini-batches in one accumulation group): the ratios are
    # taken before any parameter changed, and bfloat16 rounding stays far inside the clip range
    assert report["update_losses"]["losses/clip_fraction"] == 0.0
    assert "| generated tokens/s |" in (tmp_path / "gpu_check.md").read_text()
