"""The learning curve of a run (``learning_curve.png``) from its ``metrics.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def running_success(rows: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Cumulative (episodes, successes) after each update, from the per-update metrics rows.

    An update's `charts/success_rate` counts only the episodes that happened to end inside its
    rollout (a handful, and the short ones first), so per-update rates swing widely; the running
    rate over every completed episode so far, with its count, is what the learning curve shows.
    """
    episodes, successes, total_episodes, total_successes = [], [], 0, 0
    for row in rows:
        count = int(row.get("charts/episodes", 0) or 0)
        rate = row.get("charts/success_rate")
        if count and rate is not None and rate == rate:  # NaN when no episode ended
            total_episodes += count
            total_successes += int(round(rate * count))
        episodes.append(total_episodes)
        successes.append(total_successes)
    return episodes, successes


#: Updates whose training episodes each point of the success curve pools (the update and the one before).
WINDOW_UPDATES = 2

#: A held-out level: its success rate, or (rate, (low, high)) with its 95% interval (fractions).
Level = float | tuple[float, tuple[float, float]]


def trailing_success(rows: list[dict[str, Any]], window: int = WINDOW_UPDATES) -> tuple[list[int], list[int]]:
    """(episodes, successes) of the training episodes that ended in the last `window` updates, after each update.

    One update's own rate counts a handful of episodes (the short ones first) and swings widely;
    the running rate over every episode so far smooths that but hides learning behind the early
    episodes. A trailing window of `window` updates shows where the policy is now.
    """
    per_update = []
    for row in rows:
        count = int(row.get("charts/episodes", 0) or 0)
        rate = row.get("charts/success_rate")
        known = count and rate is not None and rate == rate  # NaN when no episode ended
        per_update.append((count, int(round(rate * count))) if known else (0, 0))
    episodes, successes = [], []
    for index in range(len(per_update)):
        pooled = per_update[max(0, index - window + 1): index + 1]
        episodes.append(sum(n for n, _ in pooled))
        successes.append(sum(k for _, k in pooled))
    return episodes, successes


def _level(value: Level) -> tuple[float, tuple[float, float] | None]:
    if isinstance(value, (tuple, list)):
        rate, interval = value
        return float(rate), (float(interval[0]), float(interval[1]))
    return float(value), None


def plot_learning_curve(
    metrics_path: str | Path, png_path: str | Path, title: str = "", levels: dict[str, Level] | None = None,
    window: int = WINDOW_UPDATES,
) -> Path:
    """Write the learning curve of a run's `metrics.jsonl` (:func:`learning_curve_figure`) as a PNG,
    cropped to what is drawn (nothing of the legend is cut off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    figure = learning_curve_figure(rows, title=title, levels=levels, window=window)
    figure.savefig(png_path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Path(png_path)


def learning_curve_figure(rows: list[dict[str, Any]], title: str = "", levels: dict[str, Level] | None = None,
                          window: int = WINDOW_UPDATES) -> Any:
    """The learning curve (a matplotlib figure): success rate, episode return, invalid-answer rate, value loss.

    The success panel shows, after each update, the success rate of the training episodes that
    ended in the last `window` updates (:func:`trailing_success`) with its Wilson 95% band; a small
    panel under it gives how many episodes each point pools. `levels` (e.g. held-out success of
    random play, the warm start, the trained policy and the expert; a rate or (rate, (low, high)),
    fractions) are labelled horizontal lines. The legend sits below the panels, outside the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlm_agent.evaluation.statistics import wilson_interval

    steps = [row["global_step"] for row in rows]
    figure = plt.figure(figsize=(17, 5.2), layout="constrained")
    grid = figure.add_gridspec(2, 4, height_ratios=[4, 1])
    success_axis = figure.add_subplot(grid[0, 0])
    count_axis = figure.add_subplot(grid[1, 0], sharex=success_axis)
    episodes, successes = trailing_success(rows, window)
    shown = [(step, n, k) for step, n, k in zip(steps, episodes, successes) if n]
    if shown:
        xs = [step for step, _, _ in shown]
        bands = [wilson_interval(k, n) for _, n, k in shown]
        success_axis.plot(xs, [100 * k / n for _, n, k in shown], marker="o", markersize=3, color="C0",
                          label=f"training episodes of the last {window} updates (95% band)")
        success_axis.fill_between(xs, [100 * low for low, _ in bands], [100 * high for _, high in bands],
                                  color="C0", alpha=0.15, linewidth=0)
    width = 0.6 * (steps[1] - steps[0]) if len(steps) > 1 else 1.0
    count_axis.bar(steps, episodes, width=width, color="C0", alpha=0.5)
    count_axis.set_ylabel("episodes", fontsize=8)
    count_axis.tick_params(labelsize=8)
    for index, (label, value) in enumerate((levels or {}).items()):
        rate, interval = _level(value)
        text = f"{label} (held out): {100 * rate:.1f}%"
        if interval is not None:
            text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
        success_axis.axhline(100 * rate, linestyle="--", linewidth=1, color=f"C{index + 1}", label=text)
    success_axis.set_ylim(0, 105)
    success_axis.set_ylabel("success rate (%)")
    success_axis.set_title("success rate")
    success_axis.tick_params(labelbottom=False)
    panels = [
        ("charts/episode_return", "mean episode return (per update)", "return"),
        ("charts/invalid_action_rate", "invalid-answer rate (per update)", "share of steps"),
        ("losses/value_loss", "value loss", "loss"),
    ]
    axes = [success_axis, count_axis]
    for column, (key, label, unit) in enumerate(panels, start=1):
        axis = figure.add_subplot(grid[:, column])
        axis.plot(steps, [row.get(key, float("nan")) for row in rows], marker="o", markersize=3)
        axis.set_title(label)
        axis.set_ylabel(unit)
        axis.set_xlabel("environment steps")
        axes.append(axis)
    count_axis.set_xlabel("environment steps")
    for axis in axes:
        axis.grid(alpha=0.3)
    handles, labels = success_axis.get_legend_handles_labels()
    if handles:  # a run in which no episode ended yet has nothing to label
        figure.legend(handles, labels, loc="outside lower center", ncol=min(3, len(handles)), fontsize=9,
                      frameon=False)
    figure.suptitle(title)
    return figure
