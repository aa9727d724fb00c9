"""Result tables and plots in the paper's layout: rows are methods, columns environments
(Markdown, CSV, a bar chart with Wilson 95% error bars, per-episode JSON).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path

from vlm_agent.evaluation.results import EvalResult
from vlm_agent.rollout.loop import EVAL_SEED_OFFSET

# --------------------------------------------------------------------------------------------
# Results tables and plot (the paper's layout: rows = methods, columns = environments)
# --------------------------------------------------------------------------------------------


def env_short_name(env_id: str) -> str:
    """Column title of an environment: ``"gym_cards/NumberLine-v0"`` -> ``"NumberLine"``."""
    name = env_id.rsplit("/", 1)[-1]
    return name.rsplit("-v", 1)[0]


def _ordered(values: Sequence[str]) -> list[str]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def results_markdown(results: Sequence[EvalResult], title: str = "Evaluation") -> str:
    """Markdown table, one row per method and one column per environment.

    Each cell reads ``success% [95% interval] · invalid% · n``; a missing (method, env) pair is
    ``–``. A second table lists tokens spent, for API methods.
    """
    methods = _ordered([result.method for result in results])
    env_ids = _ordered([result.env_id for result in results])
    by_key = {(result.method, result.env_id): result for result in results}
    lines = [
        f"# {title}",
        "",
        (
            "Episode success rate in % with its Wilson 95% interval, the share of steps whose "
            "answer named no single legal action (invalid), and the number of episodes (n). "
            f"Episodes use held-out seeds ({EVAL_SEED_OFFSET:,} + seed + episode)."
        ),
        "",
        "| method | " + " | ".join(env_short_name(env_id) for env_id in env_ids) + " |",
        "|---|" + "---|" * len(env_ids),
    ]
    for method in methods:
        cells = []
        for env_id in env_ids:
            result = by_key.get((method, env_id))
            if result is None:
                cells.append("–")
                continue
            low, high = result.ci95
            cells.append(
                f"{100 * result.success_rate:.1f} [{100 * low:.1f}, {100 * high:.1f}] · "
                f"invalid {100 * result.invalid_rate:.1f}% · n={result.episodes}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    spent = [result for result in results if result.usage.requests or result.usage.cache_hits]
    if spent:
        lines += [
            "",
            "| method | env | requests | cache hits | retries | prompt tokens | completion tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for result in spent:
            usage = result.usage
            lines.append(
                f"| {result.method} | {env_short_name(result.env_id)} | {usage.requests} | "
                f"{usage.cache_hits} | {usage.retries} | {usage.prompt_tokens} | "
                f"{usage.completion_tokens} |"
            )
    lines += ["", prompting_line(results), ""]
    return "\n".join(lines)


def prompting_line(results: Sequence[EvalResult]) -> str:
    """The prompting settings under a results table: what all rows share in one sentence, then each
    setting that differs between rows with the rows of each value, e.g. ``Prompting: cot=True,
    show_state=False. Invalid answers: random (random, expert); penalty (warm start, trained).``"""
    settings = {"cot": lambda r: r.cot, "show_state": lambda r: r.show_state,
                "invalid answers": lambda r: r.invalid_action}
    shared, differing = [], []
    for name, value_of in settings.items():
        rows_by_value: dict[str, list[str]] = {}
        for result in results:
            rows = rows_by_value.setdefault(str(value_of(result)), [])
            if result.method not in rows:
                rows.append(result.method)
        if len(rows_by_value) == 1:
            shared.append(f"{name}={next(iter(rows_by_value))}" if name != "invalid answers"
                          else f"invalid answers: {next(iter(rows_by_value))}")
        else:
            values = "; ".join(f"{value} ({', '.join(rows)})" for value, rows in rows_by_value.items())
            differing.append(f"{name[0].upper()}{name[1:]}: {values}.")
    return " ".join([f"Prompting: {', '.join(shared)}." if shared else "Prompting:", *differing])


def results_csv(results: Sequence[EvalResult]) -> str:
    """CSV text, one row per (method, environment) with every headline number."""
    buffer = io.StringIO()
    rows = [result.summary() for result in results]
    fieldnames = list(rows[0]) if rows else list(_EMPTY_SUMMARY_FIELDS)
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


_EMPTY_SUMMARY_FIELDS = ("method", "env_id", "episodes", "success_rate")


def plot_success_rates(results: Sequence[EvalResult], path: str | Path,
                       title: str = "Episode success rate") -> Path:
    """Grouped bar chart (environments on x, one bar per method) with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = _ordered([result.method for result in results])
    env_ids = _ordered([result.env_id for result in results])
    by_key = {(result.method, result.env_id): result for result in results}
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(3.2 + 1.9 * len(env_ids), 4.0))
    for index, method in enumerate(methods):
        positions, heights, lower, upper = [], [], [], []
        for env_index, env_id in enumerate(env_ids):
            result = by_key.get((method, env_id))
            if result is None:
                continue
            positions.append(env_index + (index - (len(methods) - 1) / 2) * width)
            heights.append(100 * result.success_rate)
            lower.append(max(0.0, 100 * (result.success_rate - result.ci95[0])))
            upper.append(max(0.0, 100 * (result.ci95[1] - result.success_rate)))
        axes.bar(positions, heights, width=width, label=method, yerr=[lower, upper], capsize=3)
    axes.set_xticks(range(len(env_ids)), [env_short_name(env_id) for env_id in env_ids])
    axes.set_ylabel("success rate (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(results: Sequence[EvalResult], out_dir: str | Path, stem: str,
                  title: str = "Evaluation") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv``, ``<stem>.png`` and per-episode ``<stem>.json``.

    Returns:
        The written paths by suffix (``"md"``, ``"csv"``, ``"png"``, ``"json"``).
    """
    if not results:
        raise ValueError("write_results needs at least one result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out / f"{stem}.{suffix}" for suffix in ("md", "csv", "png", "json")}
    paths["md"].write_text(results_markdown(results, title), encoding="utf-8")
    paths["csv"].write_text(results_csv(results), encoding="utf-8")
    plot_success_rates(results, paths["png"], title=title)
    episodes = [
        {**result.summary(), "records": [dataclasses.asdict(record) for record in result.records]}
        for result in results
    ]
    paths["json"].write_text(json.dumps(episodes) + "\n", encoding="utf-8")
    return paths
