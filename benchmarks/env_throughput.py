"""Environment throughput: steps per second of every card env through ``gymnasium.make``.

Random actions, resets included, one process. Each env is measured alone and as a synchronous
vector env. Both wall-clock and process-CPU rates are printed: on a shared machine the CPU rate is
the steadier number. Results go to ``benchmarks/results/env_throughput.{md,csv}``.

    python -m benchmarks.env_throughput [--steps 50000] [--num-envs 8]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import gymnasium as gym

import gym_cards
from benchmarks.make_readme import RESULTS_DIR, machine_description

# Steps/s of the original implementation on this machine class (from the project's issue tracker).
ORIGINAL = {"NumberLine-v0": 1604, "EZPoints-v0": 89, "Points24-v0": 97, "Blackjack-v0": 16}
TARGET = 20_000


def measure_single(env_id: str, steps: int, seed: int) -> tuple[float, float]:
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(min(2000, steps)):  # warm the sprite caches before timing
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        if any(env.step(env.action_space.sample())[2:4]):
            env.reset()
    return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def measure_vector(env_id: str, steps: int, num_envs: int, seed: int) -> tuple[float, float]:
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    rounds = max(1, steps // num_envs)
    for _ in range(min(200, rounds)):
        envs.step(envs.action_space.sample())  # autoreset handles episode ends
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        envs.step(envs.action_space.sample())
    envs.close()
    total = rounds * num_envs
    return total / (time.perf_counter() - wall), total / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000, help="timed steps per measurement")
    parser.add_argument("--num-envs", type=int, default=8, help="envs in the vector env")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the result files")
    args = parser.parse_args(argv)

    rows = []
    for env_id in gym_cards.CARD_ENV_IDS:
        name = env_id.split("/")[1]
        single_wall, single_cpu = measure_single(env_id, args.steps, args.seed)
        vector_wall, vector_cpu = measure_vector(env_id, args.steps, args.num_envs, args.seed)
        row = {
            "env": name,
            "single_steps_per_s_wall": round(single_wall),
            "single_steps_per_s_cpu": round(single_cpu),
            f"vector{args.num_envs}_steps_per_s_wall": round(vector_wall),
            f"vector{args.num_envs}_steps_per_s_cpu": round(vector_cpu),
            "original_steps_per_s": ORIGINAL[name],
            "speed_up_vs_original": round(single_cpu / ORIGINAL[name]),
            "meets_target": single_cpu >= TARGET,
        }
        rows.append(row)
        print(
            f"{name:14s} single {single_wall:9.0f}/s wall {single_cpu:9.0f}/s cpu | "
            f"vector x{args.num_envs} {vector_wall:9.0f}/s wall {vector_cpu:9.0f}/s cpu | original {ORIGINAL[name]}/s"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "env_throughput.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = [
        (f"{machine_description()}. {args.steps} timed steps per cell, random actions, resets included; "
        f"target {TARGET} steps/s (single env, process CPU time; wall time depends on what else runs)."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows),
    ]
    (args.out / "env_throughput.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'env_throughput.md'} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
