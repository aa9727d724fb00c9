"""A run folder's logs: ``metrics.jsonl`` / ``metrics.csv`` (one row per update, metric names grouped
by prefix: ``charts/``, ``losses/``, ``perf/``), ``samples.jsonl`` (generations), the optional
TensorBoard / wandb trackers, and how the logs are cut back to a checkpoint on resume.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SAMPLES_JSONL = "samples.jsonl"
LEARNING_CURVE_PNG = "learning_curve.png"


def append_csv(path: Path, row: dict[str, Any]) -> None:
    exists = path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def truncate_metrics(run_dir: Path, update: int) -> list[dict[str, Any]]:
    """Keep only metrics rows of updates <= `update` in the JSONL and CSV logs; return them."""
    jsonl = run_dir / METRICS_JSONL
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if jsonl.is_file() else []
    rows = [row for row in rows if row["update"] <= update]
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    csv_path = run_dir / METRICS_CSV
    if csv_path.exists():
        csv_path.unlink()
    for row in rows:
        append_csv(csv_path, row)
    samples = run_dir / SAMPLES_JSONL
    if samples.is_file():
        kept = [line for line in samples.read_text().splitlines() if line.strip() and json.loads(line)["update"] <= update]
        samples.write_text("".join(line + "\n" for line in kept))
    return rows


def update_metrics(update: int, global_step: int, rollout: Any, stats: Any, losses: dict[str, float],
                   learning_rate: float, seconds: float,
                   sum_across_processes: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """One update's metrics row: episode statistics of the rollout summed over processes, its losses."""
    episodes = stats.episodes
    local = torch.tensor(
        [
            len(episodes),
            sum(e.success for e in episodes),
            sum(e.episode_return for e in episodes),
            sum(e.length for e in episodes),
            float(rollout.invalid.sum()),
            float(rollout.invalid.numel()),
            float(stats.generated_tokens),
            stats.generation_seconds,
            float(rollout.rewards.sum()),
        ],
        dtype=torch.float64,
    )
    totals = sum_across_processes(local)
    (n_episodes, successes, return_sum, length_sum, invalid, steps, tokens, generation_seconds, reward_sum) = (
        totals.tolist()
    )
    nan = float("nan")
    metrics: dict[str, Any] = {
        "update": update,
        "global_step": global_step,
        "charts/episodes": int(n_episodes),
        "charts/success_rate": successes / n_episodes if n_episodes else nan,
        "charts/episode_return": return_sum / n_episodes if n_episodes else nan,
        "charts/episode_length": length_sum / n_episodes if n_episodes else nan,
        "charts/mean_step_reward": reward_sum / steps if steps else nan,
        "charts/invalid_action_rate": invalid / steps if steps else nan,
        "charts/learning_rate": learning_rate,
        "perf/tokens_per_second": tokens / generation_seconds if generation_seconds else nan,
        "perf/env_steps_per_second": steps / seconds if seconds else nan,
        "perf/update_seconds": seconds,
    }
    metrics.update(losses)
    return metrics


class RunLog:
    """Writes a run's metric rows and samples (main process only) and feeds the trackers of
    ``config.report_to`` (tensorboard -> ``run_dir/tensorboard/vlm-agent``, wandb -> project
    "vlm-agent", run named after the run directory)."""

    def __init__(self, run_dir: Path, config: Any, accelerator: Any, *, is_main: bool) -> None:
        self.run_dir = run_dir
        self.config = config
        self.accelerator = accelerator
        self.is_main = is_main
        self._trackers_open = False

    def open(self) -> None:
        """Start accelerate's trackers for ``report_to``."""
        if not self.config.report_targets:
            return
        if "wandb" in self.config.report_targets:
            try:
                import wandb  # noqa: F401
            except ImportError as error:
                raise ImportError("report_to=wandb needs the wandb package: pip install wandb") from error
        # TensorBoard's hparams take only numbers, text and booleans; None becomes "None".
        hyperparameters = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                           for k, v in self.config.to_dict().items()}
        self.accelerator.init_trackers(
            "vlm-agent",  # the wandb project; the TensorBoard subfolder of run_dir/tensorboard
            config=hyperparameters,
            init_kwargs={"wandb": {"name": self.run_dir.name, "dir": str(self.run_dir)}},
        )
        self._trackers_open = True

    def close(self) -> None:
        if self._trackers_open:
            self.accelerator.end_training()
            self._trackers_open = False

    def write(self, update: int, global_step: int, metrics: dict[str, Any], sample_logs: list[dict[str, Any]]) -> None:
        """Append one update's row (and its logged samples) to the run's files and trackers."""
        if not self.is_main:
            return
        with open(self.run_dir / METRICS_JSONL, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        append_csv(self.run_dir / METRICS_CSV, metrics)
        if sample_logs:
            with open(self.run_dir / SAMPLES_JSONL, "a") as handle:
                for record in sample_logs:
                    handle.write(json.dumps({"update": update, **record}) + "\n")
        if self._trackers_open:
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/" in k}
            self.accelerator.log(numbers, step=global_step)
