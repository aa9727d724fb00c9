"""The stages of a long command, as it goes: one short line when each starts and ends, with the
time since the command started, and at the end the seconds by stage and the machine they ran on
(CPU cores, torch threads). Lines are flushed at once, so a log redirected to a file shows them
as they happen.

    clock = StageClock()
    with clock.stage("SFT", "512 demonstrations, 12 epochs"):
        ...
    print(clock.summary())
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

TIMINGS_JSON = "timings.json"


def _clock_text(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def machine_summary() -> dict[str, Any]:
    """CPU cores (all, and those this process may use), torch threads, platform, torch and CUDA device."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS / Windows
        usable = os.cpu_count() or 1
    summary: dict[str, Any] = {
        "cpu_cores": os.cpu_count(), "usable_cores": usable, "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        summary["torch"] = torch.__version__
        summary["torch_threads"] = torch.get_num_threads()
        summary["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return summary


def machine_line(summary: dict[str, Any] | None = None) -> str:
    """`machine_summary` as one line: `2 CPU cores (2 usable), 1 torch thread, Linux x86_64, torch 2.13.0+cpu, no GPU`."""
    summary = summary or machine_summary()
    parts = [f"{summary['cpu_cores']} CPU cores ({summary['usable_cores']} usable)"]
    if "torch_threads" in summary:
        threads = summary["torch_threads"]
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    parts.append(summary["platform"])
    if "torch" in summary:
        parts += [f"torch {summary['torch']}", summary.get("cuda_device") or "no GPU"]
    return ", ".join(parts)


class StageClock:
    """Times named stages and prints a line as each starts and ends (see the module docstring).

    Attributes:
        seconds: Seconds of each finished stage, in order.
        current: The stage running now (None between stages): what an interruption interrupted.
    """

    def __init__(self, prefix: str = "", stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.current: str | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, text: str) -> None:
        """One line, stamped with the time since the start, flushed at once."""
        print(f"{self.prefix}[{_clock_text(self.elapsed())}] {text}", file=self.stream or sys.stdout, flush=True)

    @contextmanager
    def stage(self, name: str, what: str = "") -> Iterator[None]:
        """Time the block as stage `name`: a line before it (with `what` it does) and one after it."""
        from vlm_agent.training.interrupts import check_signals

        check_signals()
        self.say(f"{name}: {what}" if what else f"{name} ...")
        self.current = name
        started, cpu_started = time.perf_counter(), time.process_time()
        yield
        check_signals()  # a Ctrl-C that library code swallowed stops here at the latest
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_started
        self.current = None
        self.say(f"{name} done in {self.seconds[name]:.0f} s")

    def summary(self) -> str:
        """`Time by stage: alignment 61 s, SFT 209 s, ...; total 540 s (9.0 minutes; 412 CPU seconds in this process)`."""
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
        total = self.elapsed()
        cpu = time.process_time() - self.cpu_started
        return (f"Time by stage: {stages or 'none'}; total {total:.0f} s ({total / 60:.1f} minutes; "
                f"{cpu:.0f} CPU seconds in this process)")

    def write(self, path: str | Path) -> Path:
        """The stages' seconds, the total and the machine, as JSON (`timings.json` in a run folder)."""
        path = Path(path)
        record = {"stages": {name: round(seconds, 1) for name, seconds in self.seconds.items()},
                  "total_seconds": round(self.elapsed(), 1),
                  "cpu_seconds": {name: round(seconds, 1) for name, seconds in self.cpu_seconds.items()},
                  "total_cpu_seconds": round(time.process_time() - self.cpu_started, 1), "machine": machine_summary()}
        path.write_text(json.dumps(record, indent=1) + "\n")
        return path
