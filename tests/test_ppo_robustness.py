"""Slow end-to-end checks in subprocesses: SIGKILL mid-run then --resume; two data-parallel CPU processes.

Also: `target_kl` early stopping and gradient accumulation on two processes.

Run with `pytest -m slow tests/test_ppo_robustness.py` (about a minute each on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def train_command(model_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--device", "cpu", "--num_envs", "2", "--num_steps", "2",
        "--total_timesteps", "12", "--max_new_tokens", "8", "--temperature", "1.0", "--ppo_epochs", "1",
        "--mini_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-3",
        "--min_learning_rate", "1e-4", "--max_grad_norm", "1.0", "--lora_r", "4", "--lora_alpha", "8",
        "--save_every", "1", "--output_dir", str(output_dir), "--no_progress_bar", *extra,
    ]


def environment() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def metric_updates(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["update"] for line in path.read_text().splitlines() if line.strip()]


def test_sigkill_mid_run_then_resume_loses_at_most_one_update(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "vlm_agent.cli", "train", *train_command(model_dir, run_dir)]
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(metric_updates(run_dir)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)  # somewhere in update 3 (or while checkpointing update 2)
    process.wait()
    completed_before_kill = max(metric_updates(run_dir))

    resumed = subprocess.run(
        [sys.executable, "-m", "vlm_agent.cli", "train", *train_command(model_dir, run_dir, "--resume")],
        env=environment(), capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metric_updates(run_dir) == [1, 2, 3]  # each update logged once, none lost
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("update_*"))
    assert checkpoints[-1] == "update_000003"
    assert completed_before_kill >= 2
    assert not list((run_dir / "checkpoints").glob(".update_*"))  # temporary folders cleaned up


def test_two_data_parallel_cpu_processes(tiny_model_dir, tmp_path) -> None:
    model_dir = tiny_model_dir("qwen2_vl")
    run_dir = tmp_path / "ddp"
    # torchrun on CPU (gloo); on GPUs `accelerate launch --config_file vlm_agent/configs/accelerate_multi_gpu.yaml`.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vlm_agent.cli",
         "train", *train_command(model_dir, run_dir, "--total_timesteps", "24")],
        env=environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 24 steps / (2 processes x 2 envs x 2 steps) = 3 updates of 8 steps, logged once by rank 0
    assert [row["update"] for row in rows] == [1, 2, 3]
    assert [row["global_step"] for row in rows] == [8, 16, 24]
    state = json.loads((run_dir / "checkpoints" / "update_000003" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def test_two_processes_run_whole_groups_of_their_own(tiny_model_dir, tmp_path) -> None:
    """GiGPO on two CPU processes: each runs whole groups from its own reset seeds; the budget is shared."""
    model_dir = tiny_model_dir("qwen2_vl")
    run_dir = tmp_path / "ddp_gigpo"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vlm_agent.cli",
         "train", *train_command(model_dir, run_dir, "--total_timesteps", "16", "--algorithm", "gigpo",
                                 "--group_size", "2", "--invalid_action", "random")],
        env=environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Each round: 2 processes x 1 group x 2 episodes, each cut at num_steps=2: at most 8 steps, summed over processes.
    steps = [row["global_step"] for row in rows]
    assert steps == sorted(steps) and steps[-1] >= 16 and all(b - a <= 8 for a, b in zip([0, *steps], steps))
    assert all("charts/anchor_share" in row and "losses/value_loss" not in row for row in rows)
    state = json.loads(next((run_dir / "checkpoints").glob("update_*")).joinpath("state.json").read_text())
    rounds = [environment_state["round"] for environment_state in state["environments"]]
    assert state["world_size"] == 2 and len(rounds) == 2 and len(set(rounds)) == 1


def run_worker(mode: str, model_dir: Path, out_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`tests/distributed_worker.py MODE` on 2 processes; on a timeout (a collective that never
    completes) the whole process group is killed, workers included."""
    worker = Path(__file__).with_name("distributed_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), mode,
               str(model_dir), str(out_dir)]
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{mode} on 2 processes did not finish in {timeout} s (a hung collective?): {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_target_kl_stops_every_process_at_the_same_epoch(tiny_model_dir, tmp_path) -> None:
    # Process 1 is over target_kl after epoch 1, process 0 is not. Deciding per process, process 0
    # went on into the next epoch's gradient all-reduce while process 1 had left the loop (measured:
    # a hang or a crash in the next collective). Decided on the KL averaged over processes, both stop.
    result = run_worker("target_kl", tiny_model_dir("qwen2_vl"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "epochs.json").read_text()) == [1.0, 1.0]


def test_accumulated_mini_batches_equal_one_big_mini_batch_on_two_processes(tiny_model_dir, tmp_path) -> None:
    import torch

    result = run_worker("accumulation", tiny_model_dir("qwen2_vl"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    moved = {
        (setup, rank): torch.load(tmp_path / f"{setup}_rank{rank}.pt")
        for setup in ("one_batch", "accumulated")
        for rank in (0, 1)
    }
    reference = moved["one_batch", 0]
    assert any("lora" in name and delta.abs().max() > 1e-4 for name, delta in reference.items())
    assert any(name.startswith("value_head.") and delta.abs().max() > 1e-4 for name, delta in reference.items())
    for key, deltas in moved.items():
        for name, delta in deltas.items():
            # Same update on both processes (gradients averaged) and for both accumulation layouts;
            # padding to different lengths in the two layouts rounds a little differently.
            assert torch.allclose(delta, reference[name], rtol=1e-3, atol=1e-7), f"{key} {name}"
