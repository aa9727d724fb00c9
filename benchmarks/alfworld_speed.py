"""Reset and step times of the ALFWorld adapter (text backend), with and without engine caches.

Plays the expert for ``--steps`` steps on ``--games`` shipped games (train split), twice: with
the engine caches of :mod:`gym_cards.alfworld.engine` (grammar/logic parse memo, shallow context
copies, memoised PDDL translation) and with textworld's original functions. Prints a Markdown
table (milliseconds) and, with ``--csv``, writes the raw timings.

    python benchmarks/alfworld_speed.py --games 6 --steps 20
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time

os.environ.setdefault("ALFWORLD_DATA", os.path.join(tempfile.gettempdir(), "gym_cards_alfworld_data"))

from tqdm import tqdm

from gym_cards.alfworld import engine
from gym_cards.alfworld.env import ALFWorldEnv
from gym_cards.alfworld.render import render_world, world_view_from_facts


def time_episodes(games: int, steps: int, seed: int, cached: bool) -> dict[str, list[float]]:
    """Seconds per cold reset (first load of a game), warm reset (game loaded before), step and render."""
    env = ALFWorldEnv(split="train")  # imports alfworld, which installs the caches
    engine.uninstall_engine_caches()  # also empties them: every run starts cold
    if cached:
        engine.install_engine_caches()
    timings: dict[str, list[float]] = {"reset_cold": [], "reset_warm": [], "step": [], "render": []}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=6, help="shipped train games to play (default 6)")
    parser.add_argument("--steps", type=int, default=20, help="expert steps per game at most (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed (default 0)")
    parser.add_argument("--csv", default=None, help="write raw timings (seconds) to this CSV file")
    args = parser.parse_args(argv)

    results = {cached: time_episodes(args.games, args.steps, args.seed, cached) for cached in (False, True)}
    print("\n| engine caches | cold reset (ms, median) | warm reset (ms, median) | step (ms, median) | step (ms, mean) | render (ms, median) | steps |")
    print("|---|---|---|---|---|---|---|")
    for cached, timing in results.items():
        print(
            f"| {'on' if cached else 'off'} | {1000 * statistics.median(timing['reset_cold']):.0f} "
            f"| {1000 * statistics.median(timing['reset_warm']):.0f} | {1000 * statistics.median(timing['step']):.1f} "
            f"| {1000 * statistics.mean(timing['step']):.1f} | {1000 * statistics.median(timing['render']):.1f} "
            f"| {len(timing['step'])} |"
        )
    speedup = statistics.median(results[False]["step"]) / statistics.median(results[True]["step"])
    print(f"\nstep speed-up from the engine caches (median): {speedup:.1f}x")
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
