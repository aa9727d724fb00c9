"""Ctrl-C (SIGINT) and SIGTERM stop `vlm-agent train` cleanly, as real signals to a real subprocess:
the last complete update is saved whatever `save_every` is, one line names that checkpoint and the
exact resume command, no traceback, exit status 130 / 143; the resumed run continues from the
interrupted update exactly as an uninterrupted run would. Output reaches a redirected log as it
happens (the stage lines), and the demo's warm-start stages stop with one line too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlm_agent.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def environment() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def flags(model_dir: Path, run_dir: Path, total_timesteps: int) -> list[str]:
    """A deterministic run of 2 envs x 2 steps per update; a constant learning rate, so that a run
    extended on resume learns exactly like one given the longer total from the start."""
    return [
        "train", "--model_name_or_path", str(model_dir), "--device", "cpu", "--num_envs", "2", "--num_steps", "2",
        "--total_timesteps", str(total_timesteps), "--max_new_tokens", "6", "--temperature", "1.0",
        "--ppo_epochs", "1", "--mini_batch_size", "2", "--gradient_accumulation_steps", "1", "--lora_r", "4",
        "--lora_alpha", "8", "--learning_rate", "1e-3", "--lr_scheduler", "constant", "--save_every", "1000",
        "--deterministic", "--output_dir", str(run_dir), "--no_progress_bar",
    ]


def metric_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def start_and_signal(command: list[str], tmp_path: Path, ready, signum: int, timeout: float = 300) -> tuple[int, str, str]:
    """Run `command` (stdout to a file, as a redirected log), send `signum` once `ready(stdout_so_far)`
    holds, and return its exit status, stdout and stderr."""
    log, errors = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with log.open("w") as out, errors.open("w") as err:
        process = subprocess.Popen(command, env=environment(), stdout=out, stderr=err)
        deadline = time.time() + timeout
        while not ready(log.read_text()) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, f"ended before the signal: {errors.read_text()[-2000:]}"
        process.send_signal(signum)
        status = process.wait(timeout=timeout)
    return status, log.read_text(), errors.read_text()


def the_one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # no progress bars either ("Loading weights" and the like)
    return lines[0]


def comparable(row: dict) -> dict:
    """A metrics row without its wall-clock measurements."""
    return {key: value for key, value in row.items() if not key.startswith("perf/")}


def interrupt_then_resume(model_dir: Path, tmp_path: Path, signum: int) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "vlm_agent.cli", *flags(model_dir, run_dir, 400)]
    status, stdout, stderr = start_and_signal(
        command, tmp_path, lambda out: "PPO: " in out and len(metric_rows(run_dir)) >= 2, signum)
    # The stage line was in the redirected log while the run went on (flushed, not buffered).
    assert stdout.startswith("[0:") and "PPO: 100 updates of 2 envs x 2 steps" in stdout
    assert status == 128 + signum
    done = len(metric_rows(run_dir))  # the interrupted update is abandoned, never logged
    assert done >= 2 and [row["update"] for row in metric_rows(run_dir)] == list(range(1, done + 1))
    checkpoint = run_dir / "checkpoints" / f"update_{done:06d}"
    name = signal.Signals(signum).name
    # A signal during a rollout abandons it; during the learning step, the update is finished first.
    during = (f"update {done + 1}, which was abandoned" if "abandoned" in stderr
              else f"update {done}, which was finished first")
    assert the_one_line(stderr) == (
        f"vlm-agent train: stopped by {name} during {during}: update {done} of 100 is saved in {checkpoint}; "
        f"resume with: vlm-agent train --output_dir {run_dir} --resume")
    assert (checkpoint / "manifest.json").is_file()  # saved on the signal: save_every is 1000

    # The printed command, plus a shorter total: it continues with the interrupted update.
    total = 4 * (done + 2)
    assert run(["train", "--output_dir", str(run_dir), "--resume", "--total_timesteps", str(total)]) == 0
    resumed = metric_rows(run_dir)
    assert [row["update"] for row in resumed] == list(range(1, done + 3))
    reference = tmp_path / "reference"
    assert run(flags(model_dir, reference, total)) == 0
    assert [comparable(row) for row in resumed] == [comparable(row) for row in metric_rows(reference)]


def test_sigint_saves_the_last_complete_update_and_the_run_resumes_from_there(tiny_model_dir, tmp_path) -> None:
    interrupt_then_resume(tiny_model_dir("qwen2_vl"), tmp_path, signal.SIGINT)


@pytest.mark.slow
def test_sigterm_stops_the_same_way_with_status_143(tiny_model_dir, tmp_path) -> None:
    interrupt_then_resume(tiny_model_dir("qwen2_vl"), tmp_path, signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "projector_steps"), [("alignment", "400"), ("SFT", "1")])
def test_ctrl_c_during_the_demos_warm_start_is_one_line(stage, projector_steps, tmp_path) -> None:
    command = [sys.executable, "-m", "vlm_agent.cli", "train", "--output_dir", str(tmp_path / "run"),
               "--align_projector_steps", projector_steps, "--align_language_steps", "1", "--align_num_examples", "16",
               "--sft_num_demos", "64", "--sft_epochs", "50", "--no_progress_bar"]
    status, stdout, stderr = start_and_signal(command, tmp_path, lambda out: f"] {stage}: " in out, signal.SIGINT)
    assert status == 130
    assert the_one_line(stderr) == (
        f"vlm-agent train: stopped by SIGINT during the demo's {stage} stage, before PPO: nothing to resume; "
        "run the command again to start over (and delete the unfinished run folder)")


@pytest.mark.slow
def test_ctrl_c_in_eval_and_align_is_one_line(tiny_model_dir, tmp_path) -> None:
    evaluate = [sys.executable, "-m", "vlm_agent.cli", "eval", "--methods", f"local:{tiny_model_dir('qwen2_vl')}",
                "--episodes", "500", "--num_envs", "1", "--out_dir", str(tmp_path / "eval"), "--no_progress"]
    started = time.time()
    status, _, stderr = start_and_signal(evaluate, tmp_path, lambda out: time.time() > started + 12, signal.SIGINT)
    assert (status, the_one_line(stderr)) == (130, "vlm-agent eval: stopped by SIGINT")
    align = [sys.executable, "-m", "vlm_agent.cli", "align", "--output_dir", str(tmp_path / "aligned"),
             "--projector_steps", "2000", "--num_examples", "64", "--no_progress_bar"]
    started = time.time()
    status, _, stderr = start_and_signal(align, tmp_path, lambda out: time.time() > started + 12, signal.SIGTERM)
    assert (status, the_one_line(stderr)) == (143, "vlm-agent align: stopped by SIGTERM")
