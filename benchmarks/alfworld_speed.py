"""Reset and step times of the ALFWorld adapter (text backend), with and without engine caches.

Plays the expert for ``--steps`` steps on ``--games`` shipped games (train split), twice: with
the engine caches of :mod:`gym_cards.alfworld.engine` (grammar/logic parse memo, shallow context
copies, memoised PDDL translation) and with textworld's original functions. Prints a Markdown
table (milliseconds) and writes it to ``benchmarks/results/alfworld_speed.md`` with a summary
CSV ``alfworld_speed.csv``; ``--csv PATH`` also writes every raw timing.

Usage (from the repository root)::

    python -m benchmarks.alfworld_speed --games 6 --steps 20
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.make_readme import RESULTS_DIR, machine_description
from gym_cards.alfworld import engine
from gym_cards.alfworld.env import ALFWorldEnv
from gym_cards.alfworld.render import render_world, world_view_from_facts

RESULT_NAME = "alfworld_speed"
MEASURES = ("reset_cold", "reset_warm", "step", "render")
"""What is timed: first load of a game, reset of a game loaded before, one env step, one frame render."""


def time_episodes(games: int, steps: int, seed: int, cached: bool) -> dict[str, list[float]]:
    """Seconds per cold reset (first load of a game), warm reset (game loaded before), step and render."""
    env = ALFWorldEnv(split="train")  # imports alfworld, which installs the caches
    engine.uninstall_engine_caches()  # also empties them: every run starts cold
    if cached:
        engine.install_engine_caches()
    timings: dict[str, list[float]] = {measure: [] for measure in MEASURES}
    for game in tqdm(range(min(games, len(env.game_files))), desc=f"games ({'cached' if cached else 'uncached'})"):
        for kind in ("reset_cold", "reset_warm"):
            start = time.perf_counter()
            env.reset(seed=seed, options={"game": game})
            timings[kind].append(time.perf_counter() - start)
        for _ in range(steps):
            action = env.expert_action()
            start = time.perf_counter()
            *_, terminated, _, _ = env.step(action)
            timings["step"].append(time.perf_counter() - start)
            view = world_view_from_facts(env._backend.facts)
            start = time.perf_counter()
            render_world(view, env._backend.task_sentence, env.image_size)
            timings["render"].append(time.perf_counter() - start)
            if terminated:
                break
    env.close()
    engine.install_engine_caches()
    return timings


def summary_rows(results: dict[bool, dict[str, list[float]]]) -> list[dict[str, str | int]]:
    """One row per (engine caches, measure): count, median and mean in milliseconds."""
    rows: list[dict[str, str | int]] = []
    for cached, timing in results.items():
        for measure in MEASURES:
            values = timing[measure]
            rows.append({
                "engine_caches": "on" if cached else "off",
                "measure": measure,
                "count": len(values),
                "median_ms": f"{1000 * statistics.median(values):.2f}",
                "mean_ms": f"{1000 * statistics.mean(values):.2f}",
            })  # fmt: skip
    return rows


def markdown_report(results: dict[bool, dict[str, list[float]]], games: int, steps: int, command: str) -> str:
    """The results table (ms), the step speed-up from the caches, the machine and the command."""
    lines = [
        (
            "| engine caches | cold reset (ms, median) | warm reset (ms, median) | step (ms, median) "
            "| step (ms, mean) | render (ms, median) | steps |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cached, timing in results.items():
        lines.append(
            f"| {'on' if cached else 'off'} | {1000 * statistics.median(timing['reset_cold']):.0f} "
            f"| {1000 * statistics.median(timing['reset_warm']):.0f} | {1000 * statistics.median(timing['step']):.1f} "
            f"| {1000 * statistics.mean(timing['step']):.1f} | {1000 * statistics.median(timing['render']):.1f} "
            f"| {len(timing['step'])} |"
        )
    speedup = statistics.median(results[False]["step"]) / statistics.median(results[True]["step"])
    lines += [
        "",
        (
            f"Step speed-up from the engine caches (median): {speedup:.1f}x. The expert plays at most {steps} "
            f"steps on each of {games} shipped train games, reset seed fixed; every run starts with empty caches."
        ),
        "",
        machine_description() + ".",
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time both engine variants, print the table and write ``alfworld_speed.{md,csv}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=6, help="shipped train games to play (default 6)")
    parser.add_argument("--steps", type=int, default=20, help="expert steps per game at most (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed (default 0)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help=f"result files go here (default {RESULTS_DIR})")
    parser.add_argument("--csv", default=None, help="also write every raw timing (seconds) to this CSV file")
    args = parser.parse_args(argv)
    # Read the command line now: resetting an ALFWorld game rewrites sys.argv (fast-downward translate).
    command = " ".join(["python -m benchmarks.alfworld_speed", *(sys.argv[1:] if argv is None else argv)])
    if args.games <= 0 or args.steps <= 0:
        parser.error(f"--games and --steps must be positive integers, got {args.games} and {args.steps}")

    results = {cached: time_episodes(args.games, args.steps, args.seed, cached) for cached in (False, True)}
    report = markdown_report(results, args.games, args.steps, command)
    print("\n" + report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{RESULT_NAME}.md").write_text(report, encoding="utf-8")
    with open(args.out_dir / f"{RESULT_NAME}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["engine_caches", "measure", "count", "median_ms", "mean_ms"])
        writer.writeheader()
        writer.writerows(summary_rows(results))
    print(f"wrote {args.out_dir / RESULT_NAME}.{{md,csv}}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["engine_caches", "measure", "seconds"])
            for cached, timing in results.items():
                for measure, values in timing.items():
                    writer.writerows([("on" if cached else "off", measure, f"{v:.6f}") for v in values])
        print(f"raw timings written to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
