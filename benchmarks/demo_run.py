"""The embedded demo end to end: `vlm-agent train` with no model and no config, in a fresh folder.

Runs ``python -m vlm_agent.cli train --output_dir <fresh folder> --no_progress_bar`` (the README's
one command; without progress bars, which change nothing but the log) as a subprocess, shows its
output as it comes, and writes what the run measured itself: the seconds of each stage (alignment,
SFT, PPO, the closing comparison; from the run's ``timings.json``), the closing held-out
comparison with its 95% intervals (``held_out_comparison.csv``), its learning curve, and the machine.

Writes ``benchmarks/results/demo_run.{md,csv,png}``; the README quotes these numbers.

Usage (from the repository root; 10-25 minutes on a 2-core machine)::

    python -m benchmarks.demo_run
    python -m benchmarks.demo_run --keep runs/demo_benchmark   # keep the run folder there
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.make_readme import RESULTS_DIR, machine_description

RESULT_NAME = "demo_run"
#: Seconds between two samples of the machine's load average while the demo runs.
LOAD_SAMPLE_SECONDS = 10.0
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--keep", type=Path, default=None, help="run the demo into this (new) folder and keep it")
    parser.add_argument("extra", nargs="*", help="more `vlm-agent train` options after `--` (e.g. for a quick check)")
    return parser.parse_args(argv)


def run_demo(run_dir: Path, extra: Sequence[str]) -> tuple[int, list[float]]:
    """`vlm-agent train` into `run_dir`; its exit status and the 1-minute load average every
    `LOAD_SAMPLE_SECONDS` while it ran (how much else the machine was doing: the seconds depend on it)."""
    command = [sys.executable, "-m", "vlm_agent.cli", "train", "--output_dir", str(run_dir), "--no_progress_bar",
               *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    print("$ " + " ".join(command[2:]), flush=True)
    process = subprocess.Popen(command, env=env, cwd=REPO)
    loads: list[float] = []
    while True:
        try:
            status = process.wait(timeout=LOAD_SAMPLE_SECONDS)
            return status, loads
        except subprocess.TimeoutExpired:
            if hasattr(os, "getloadavg"):
                loads.append(os.getloadavg()[0])


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The run's timings.json and held_out_comparison.csv rows."""
    timings = json.loads((run_dir / "timings.json").read_text())
    with (run_dir / "held_out_comparison.csv").open() as handle:
        comparison = list(csv.DictReader(handle))
    return timings, comparison


def result_rows(timings: dict[str, Any], comparison: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One CSV row per stage (seconds), the total, then one per comparison row (success, interval)."""
    rows: list[dict[str, Any]] = []
    empty = {"seconds": "", "success_rate": "", "ci95_low": "", "ci95_high": "", "invalid_rate": "", "episodes": ""}
    for stage, seconds in timings["stages"].items():
        rows.append({"kind": "stage", "name": stage, **empty, "seconds": f"{seconds:.1f}"})
    rows.append({"kind": "stage", "name": "total", **empty, "seconds": f"{timings['total_seconds']:.1f}"})
    for row in comparison:
        rows.append({"kind": "comparison", "name": row["method"], **empty,
                     **{key: row[key] for key in ("success_rate", "ci95_low", "ci95_high", "invalid_rate", "episodes")}})
    return rows


def write_results(rows: list[dict[str, Any]], timings: dict[str, Any], comparison: list[dict[str, str]],
                  run_dir: Path, out_dir: Path, env_id: str, loads: Sequence[float] = ()) -> dict[str, Path]:
    """Write ``demo_run.{md,csv,png}`` into ``out_dir``."""
    from vlm_agent.training.stages import machine_line

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{RESULT_NAME}.{suffix}" for suffix in ("md", "csv", "png")}
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shutil.copyfile(run_dir / "learning_curve.png", paths["png"])
    total = timings["total_seconds"]
    lines = ["| stage | seconds | minutes |", "|---|---:|---:|"]
    for stage, seconds in timings["stages"].items():
        lines.append(f"| {stage} | {seconds:.0f} | {seconds / 60:.1f} |")
    lines += [f"| **total** (start to end of the command) | **{total:.0f}** | **{total / 60:.1f}** |", ""]
    episodes = comparison[0]["episodes"] if comparison else "?"
    lines += [f"Held-out success on {env_id} ({episodes} episodes each, the same held-out deals for every row):", "",
              "| method | success % | 95% interval | invalid answers % |", "|---|---:|---:|---:|"]
    for row in comparison:
        low, high = 100 * float(row["ci95_low"]), 100 * float(row["ci95_high"])
        lines.append(f"| {row['method']} | {100 * float(row['success_rate']):.1f} | [{low:.1f}, {high:.1f}] | "
                     f"{100 * float(row['invalid_rate']):.1f} |")
    lines += [
        "",
        "The learning curve below is the run's own `learning_curve.png`: training episodes of the last 2 updates "
        "with their 95% band, and the held-out levels above.",
        "",
        f"The run: {machine_line(timings['machine'])}."
        + (f" The machine's 1-minute load average while it ran (sampled every {LOAD_SAMPLE_SECONDS:.0f} s): "
           f"{sum(loads) / len(loads):.1f} on average, {min(loads):.1f} to {max(loads):.1f}; a load above the "
           f"{timings['machine']['cpu_cores']} cores means other programs shared them, and the seconds above "
           "grow with it." if loads else ""),
        "",
        machine_description(),
        "",
        "Command: `python -m benchmarks.demo_run` (runs `vlm-agent train --output_dir <fresh folder> "
        "--no_progress_bar`).",
    ]
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="demo_run_") as work:
        run_dir = args.keep or Path(work) / "run"
        if run_dir.exists():
            print(f"{run_dir} exists; the benchmark runs the demo into a fresh folder", file=sys.stderr)
            return 2
        status, loads = run_demo(run_dir, args.extra)
        if status != 0:
            print(f"the demo exited with status {status}; no results written", file=sys.stderr)
            return 1
        config = json.loads((run_dir / "config.json").read_text())
        timings, comparison = read_run(run_dir)
        paths = write_results(result_rows(timings, comparison), timings, comparison, run_dir, args.out_dir,
                              config["env_id"], loads)
    print(paths["md"].read_text(encoding="utf-8"))
    print("Written: " + ", ".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
