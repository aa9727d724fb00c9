"""The training run's learning curve: running success over completed episodes, reference levels."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from vlm_agent.training.learning_curve import plot_learning_curve, running_success


def _row(update: int, episodes: int, success_rate: float) -> dict:
    return {"update": update, "global_step": 8 * update, "charts/episodes": episodes,
            "charts/success_rate": success_rate, "charts/episode_return": 0.0,
            "charts/invalid_action_rate": 0.1, "losses/value_loss": 1.0}


def test_running_success_counts_every_completed_episode() -> None:
    # The per-update rates (1.00, 0.69, 0.41, ...) come from a handful of episodes each;
    # the running rate weighs each episode once.
    rows = [_row(1, 2, 1.0), _row(2, 0, float("nan")), _row(3, 8, 0.25), _row(4, 10, 0.7)]
    episodes, successes = running_success(rows)
    assert episodes == [2, 2, 10, 20]
    assert successes == [2, 2, 4, 11]


def test_learning_curve_draws_levels(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(_row(i, 4, 0.5)) + "\n" for i in range(1, 5)))
    path = plot_learning_curve(metrics, tmp_path / "curve.png", title="NumberLine",
                               levels={"random": 0.6, "warm start": 0.64, "trained": 0.8, "expert": 1.0})
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 1000
