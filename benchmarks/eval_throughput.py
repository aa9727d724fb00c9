"""Batched evaluation: held-out episodes per second of `vlm-agent eval` with a tiny VLM, N = 1 .. 16.

``evaluate_agent`` steps N environments side by side and sends their N prompts to the agent as
one batch; a local policy (:class:`vlm_agent.agents.local_hf.LocalHFAgent`) answers a batch with
one ``generate`` call. This measures what that buys: the same agent plays held-out NumberLine
episodes with N = 1, 8 and 16 environments (N = 16 is ``vlm-agent eval``'s default), and the
speed-up of episodes per second is taken against N = 1 within the same run.

The model is a tiny random-weight Qwen2-VL (``vlm_agent.demo.tiny_models.make_tiny_model``, built
offline) sampling up to 64 new tokens at T = 0.2, the CPU demo's settings; its answers are junk,
so every move is the random rescue and episodes are as long as random play makes them. A batch
shrinks as the last episodes finish, as in a real evaluation.

Every N > 1 plays the same held-out episodes. N = 1, the slow one, plays only the first of them,
and its time is scaled to all of them by env steps (at N = 1 each env step is one generate call);
since every move is the random rescue, which depends on the episode alone, episode k is the same
game for every N, and the script checks that the N = 1 episodes match.

Writes ``benchmarks/results/eval_throughput.{md,csv,png}``.

Usage (from the repository root; about two CPU minutes)::

    python -m benchmarks.eval_throughput
    python -m benchmarks.eval_throughput --num-envs 1 16 --episodes 64
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.make_readme import RESULTS_DIR, machine_description

RESULT_NAME = "eval_throughput"
ENV_ID = "gym_cards/NumberLine-v0"
TARGET_SPEEDUP = 8.0
"""Issue 15's target: N = 16 at least 8x the episodes per second of N = 1."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 16], help="N values (include 1)")
    parser.add_argument("--episodes", type=int, default=96, help="held-out episodes every N > 1 plays")
    parser.add_argument("--single-episodes", type=int, default=16,
                        help="the first this many of them are played with N = 1 (see the module docstring)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (the demo's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (vlm-agent uses 1 on CPU)")
    parser.add_argument("--seed", type=int, default=0, help="model, sampling and episode seed")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    if 1 not in args.num_envs:
        parser.error("--num-envs must include 1: speed-ups are relative to N = 1")
    if not 0 < args.single_episodes <= args.episodes:
        parser.error("--single-episodes must lie in [1, --episodes]")
    return args


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Episodes/s, env steps/s and answer tokens per step for each N on the same held-out episodes."""
    import torch

    from vlm_agent.agents.local_hf import LocalHFAgent
    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.evaluation.evaluate import evaluate_agent

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model_dir = make_tiny_model("qwen2_vl", Path(work) / "tiny", seed=args.seed)
        agent = LocalHFAgent.from_pretrained(model_dir, temperature=0.2, max_new_tokens=args.max_new_tokens,
                                             seed=args.seed, device="cpu")
        evaluate_agent(agent, ENV_ID, episodes=2, seed=args.seed, num_envs=2, progress=False)  # warm-up
        runs = {}
        for n in args.num_envs:
            episodes = args.single_episodes if n == 1 else args.episodes
            before = agent.usage()
            wall, cpu = time.perf_counter(), time.process_time()
            result = evaluate_agent(agent, ENV_ID, episodes=episodes, seed=args.seed, num_envs=n, progress=False)
            runs[n] = (result, time.perf_counter() - wall, time.process_time() - cpu,
                       (agent.usage() - before).completion_tokens)
    full = next(result for n, (result, *_) in runs.items() if n != 1) if len(runs) > 1 else runs[1][0]
    single, single_wall, single_cpu, _ = runs[1]
    # Every answer of the random model is unusable, so episode k plays the same moves for every N
    # (its rescue generator depends on k only); check it rather than assume it.
    same = [(r.length, r.success) for r in single.records] == [
        (r.length, r.success) for r in full.records[: single.episodes]]
    rows = []
    for n, (result, wall_s, cpu_s, tokens) in runs.items():
        if n == 1:
            # One generate call per env step: N = 1's time for all episodes is its time per step
            # times their steps.
            scale = full.steps / result.steps
            episodes, steps, wall_s, cpu_s = full.episodes, full.steps, wall_s * scale, cpu_s * scale
        else:
            episodes, steps = result.episodes, result.steps
        rows.append({
            "num_envs": n, "episodes": episodes, "env_steps": steps, "timed_episodes": result.episodes,
            "seconds": round(wall_s, 3), "episodes_per_s": round(episodes / wall_s, 4),
            "episodes_per_cpu_s": round(episodes / cpu_s, 4),
            "env_steps_per_s": round(steps / wall_s, 3),
            "answer_tokens_per_step": round(tokens / max(1, result.steps), 2),
            "same_episodes": same,
        })
    base = next(row for row in rows if row["num_envs"] == 1)
    for row in rows:
        row["speedup"] = round(row["episodes_per_s"] / base["episodes_per_s"], 3)
        row["cpu_speedup"] = round(row["episodes_per_cpu_s"] / base["episodes_per_cpu_s"], 3)
    return rows


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Path]:
    """Write ``eval_throughput.{md,csv,png}`` into ``args.out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out / f"{RESULT_NAME}.{suffix}" for suffix in ("md", "csv", "png")}
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| N envs | episodes | timed episodes | env steps | episodes/s | speedup vs N=1 | episodes per CPU s "
        "| CPU speedup | env steps/s | answer tokens per step |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_envs']} | {r['episodes']} | {r['timed_episodes']} | {r['env_steps']} | {r['episodes_per_s']:.3f} | "
            f"{r['speedup']:.1f}x | {r['episodes_per_cpu_s']:.3f} | {r['cpu_speedup']:.1f}x | "
            f"{r['env_steps_per_s']:.2f} | {r['answer_tokens_per_step']:.1f} |"
        )
    top = max(rows, key=lambda r: r["num_envs"])

    def verdict(value: float) -> str:
        return "meets" if value >= TARGET_SPEEDUP else "misses"

    command = "python -m benchmarks.eval_throughput" + ("" if not argv else " " + " ".join(argv))
    lines += [
        "",
        (
            f"N = {top['num_envs']} plays {top['speedup']:.1f}x the held-out episodes per second of N = 1 "
            f"(wall clock; {verdict(top['speedup'])} the target of {TARGET_SPEEDUP:g}x) and {top['cpu_speedup']:.1f}x "
            f"per CPU second ({verdict(top['cpu_speedup'])} it). On a shared machine the wall-clock ratio moves with "
            "the other programs' load while each N runs; the CPU-time ratio is the steadier of the two."
        ),
        "",
        (
            f"{ENV_ID}, CoT prompt, tiny random qwen2_vl, temperature 0.2, up to {args.max_new_tokens} new tokens, "
            f"{args.threads} torch thread(s), seed {args.seed}; every N > 1 plays the same {args.episodes} held-out "
            f"episodes. N = 1 plays the first {args.single_episodes} of them (N = 1 is the slow one) and its time is "
            "scaled to all of them by env steps: at N = 1 every env step is one generate call of one answer. Every "
            "answer of the random model is unusable, so every move is the random rescue, which depends on the "
            "episode only: episode k is the same game for every N ("
            + ("checked: the N = 1 episodes matched move for move" if rows[0]["same_episodes"] else
               "CHECK FAILED: the N = 1 episodes differed, so the scaling is approximate")
            + "). Episodes/s is episodes over wall time; per CPU second, over process CPU time (what load from "
            "other programs changes least). A batch shrinks as the last episodes end, as in any evaluation."
        ),
        "",
        machine_description() + ".",
        "",
        f"Command: `{command}`",
    ]
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    labels = [str(r["num_envs"]) for r in rows]
    axis.bar(labels, [r["episodes_per_s"] for r in rows], color="C0")
    for index, r in enumerate(rows):
        axis.annotate(f"{r['speedup']:.1f}x", (index, r["episodes_per_s"]), textcoords="offset points",
                      xytext=(0, 3), ha="center", fontsize=8)
    axis.set_xlabel("environments per generate call (N)")
    axis.set_ylabel("held-out episodes per second")
    axis.set_title("Batched evaluation, tiny VLM on CPU")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(paths["png"], dpi=110)
    plt.close(figure)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    rows = measure(args)
    paths = write_results(rows, args, argv)
    print(paths["md"].read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
