"""The training run's learning curve: success over a trailing window of episodes with its band,
held-out levels as labelled lines, episode counts in their own panel, the legend outside the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlm_agent.training.learning_curve import (
    learning_curve_figure,
    plot_learning_curve,
    running_success,
    trailing_success,
)


def _row(update: int, episodes: int, success_rate: float) -> dict:
    return {"update": update, "global_step": 8 * update, "charts/episodes": episodes,
            "charts/success_rate": success_rate, "charts/episode_return": 0.0,
            "charts/invalid_action_rate": 0.1, "losses/value_loss": 1.0}


def test_running_success_counts_every_completed_episode() -> None:
    rows = [_row(1, 2, 1.0), _row(2, 0, float("nan")), _row(3, 8, 0.25), _row(4, 10, 0.7)]
    episodes, successes = running_success(rows)
    assert episodes == [2, 2, 10, 20]
    assert successes == [2, 2, 4, 11]


def test_trailing_success_pools_the_last_two_updates() -> None:
    # Learning shows: the running rate over all episodes (0.5 -> 0.55) hides the jump that the
    # trailing window (0.5 -> 0.9) shows.
    rows = [_row(1, 10, 0.2), _row(2, 10, 0.8), _row(3, 0, float("nan")), _row(4, 10, 1.0), _row(5, 10, 0.8)]
    episodes, successes = trailing_success(rows)
    assert episodes == [10, 20, 10, 10, 20]
    assert successes == [2, 10, 8, 10, 18]
    assert trailing_success(rows, window=1) == ([10, 10, 0, 10, 10], [2, 8, 0, 10, 8])


LEVELS = {"random": (0.625, (0.556, 0.689)), "warm start": (0.585, (0.516, 0.651)), "trained": 0.82,
          "trained (blank image)": 0.545, "expert": (1.0, (0.981, 1.0))}


def test_learning_curve_keeps_counts_and_legend_off_the_data(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [_row(i, 40 + i, 0.5 + 0.05 * i) for i in range(1, 9)]
    figure = learning_curve_figure(rows, title="NumberLine", levels=LEVELS)
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert not [text for text in texts if text.startswith("n=")]  # no count labels on the curve
    [legend] = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[0] == "training episodes of the last 2 updates (95% band)"
    assert "random (held out): 62.5% [55.6, 68.9]" in labels and "trained (held out): 82.0%" in labels
    legend_box = legend.get_window_extent(renderer)
    assert all(legend_box.y1 <= axis.get_tightbbox(renderer).y0 + 1 for axis in figure.axes)  # below every panel
    counts = figure.axes[1]
    assert [round(bar.get_height()) for bar in counts.patches] == trailing_success(rows)[0]
    # Saved cropped to what is drawn: the whole legend is in the PNG.
    tight = figure.get_tightbbox(renderer)
    assert tight.y0 <= legend_box.y0 / figure.dpi and tight.x0 <= legend_box.x0 / figure.dpi


def test_learning_curve_png(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(_row(i, 4, 0.5)) + "\n" for i in range(1, 5)))
    path = plot_learning_curve(metrics, tmp_path / "curve.png", title="NumberLine", levels=LEVELS)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 400
    empty = tmp_path / "empty.jsonl"  # no episode ended yet: nothing to label, still a figure
    empty.write_text(json.dumps(_row(1, 0, float("nan"))) + "\n")
    assert plot_learning_curve(empty, tmp_path / "empty.png").is_file()
