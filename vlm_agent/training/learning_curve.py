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


def plot_learning_curve(
    metrics_path: str | Path, png_path: str | Path, title: str = "", levels: dict[str, float] | None = None
) -> Path:
    """Learning curve (PNG): running success rate, episode return, invalid-answer rate, value loss.

    The success panel shows the running rate over all completed training episodes with its Wilson
    95% band and the episode count, and `levels` (e.g. held-out success of random play, the warm
    start, the trained policy and the expert, as fractions) as labelled horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlm_agent.evaluation.statistics import wilson_interval

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    steps = [row["global_step"] for row in rows]
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    success_axis = axes[0]
    episodes, successes = running_success(rows)
    shown = [(step, n, k) for step, n, k in zip(steps, episodes, successes) if n]
    if shown:
        xs = [step for step, _, _ in shown]
        rates = [100 * k / n for _, n, k in shown]
        bands = [wilson_interval(k, n) for _, n, k in shown]
        success_axis.plot(xs, rates, marker="o", markersize=3, color="C0", label="training episodes, running")
        success_axis.fill_between(xs, [100 * low for low, _ in bands], [100 * high for _, high in bands],
                                  color="C0", alpha=0.15, linewidth=0)
        labelled = sorted(set(range(0, len(shown), max(1, len(shown) // 6))) | {len(shown) - 1})
        for index in labelled:
            x, rate, n = xs[index], rates[index], shown[index][1]
            success_axis.annotate(f"n={n}", (x, rate), textcoords="offset points", xytext=(0, -12),
                                  ha="center", fontsize=7, color="C0")
    for index, (label, level) in enumerate((levels or {}).items()):
        success_axis.axhline(100 * level, linestyle="--", linewidth=1, color=f"C{index + 1}",
                             label=f"{label} (held out): {100 * level:.1f}%")
    success_axis.set_ylim(0, 105)
    success_axis.set_ylabel("success rate (%)")
    success_axis.set_title("success rate")
    if shown or levels:  # a run in which no episode ended yet has nothing to label
        success_axis.legend(fontsize=7, loc="lower right")
    panels = [
        (axes[1], "charts/episode_return", "mean episode return", "return"),
        (axes[2], "charts/invalid_action_rate", "invalid-answer rate", "share of steps"),
        (axes[3], "losses/value_loss", "value loss", "loss"),
    ]
    for axis, key, label, unit in panels:
        axis.plot(steps, [row.get(key, float("nan")) for row in rows], marker="o", markersize=3)
        axis.set_title(label + (" (per update)" if key.startswith("charts/") else ""))
        axis.set_ylabel(unit)
    for axis in axes:
        axis.set_xlabel("environment steps")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)
