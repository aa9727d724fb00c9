"""vlm_agent.training.stages: every run ends with its time by stage, the total and the CPU seconds."""

from __future__ import annotations

import io
import json
import time

from vlm_agent.training.stages import StageClock


def test_the_summary_and_timings_hold_the_total_and_cpu_seconds(tmp_path) -> None:
    stream = io.StringIO()
    clock = StageClock(stream=stream)
    with clock.stage("comparison", "40 held-out episodes each of 4 players"):
        started = time.process_time()
        while time.process_time() - started < 0.2:  # some CPU work
            sum(i * i for i in range(10_000))
    summary = clock.summary()
    assert summary.startswith("Time by stage: comparison ") and "; total " in summary
    assert "CPU seconds in this process)" in summary
    record = json.loads(clock.write(tmp_path / "timings.json").read_text())
    assert set(record["stages"]) == set(record["cpu_seconds"]) == {"comparison"}
    assert record["cpu_seconds"]["comparison"] > 0 and record["total_cpu_seconds"] >= record["cpu_seconds"]["comparison"]
    assert "[0:00] comparison: 40 held-out episodes" in stream.getvalue()
