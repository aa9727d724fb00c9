"""Time VLMPolicy.act (generation + scoring) and evaluate (forward + backward) on tiny models.

Usage::

    python benchmarks/policy_speed.py --arch qwen2_vl --batch-sizes 1 8 --new-tokens 64 --repeats 3

Prints a Markdown table (median seconds over ``--repeats`` after one warm-up) and, with
``--csv PATH``, writes the same rows as CSV. The tiny models are random, so they rarely stop
before ``--new-tokens``: every answer is full length, the worst case. One torch thread.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlm_agent.models import ModelSettings
from vlm_agent.parsing import InvalidActionPolicy
from vlm_agent.policy import GenerationSettings, VLMPolicy
from vlm_agent.prompts import prompt_for
from vlm_agent.tiny_models import TINY_ARCHITECTURES, make_tiny_model


def time_policy(policy: VLMPolicy, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of one act() and of one evaluate() + backward() over ``batch`` observations."""
    rng = np.random.default_rng(0)
    template = prompt_for("gym_cards/NumberLine-v0")
    images = [rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8) for _ in range(batch)]
    prompts = [template.render("", ["-", "+"])] * batch
    legal = [["-", "+"]] * batch
    act_times, evaluate_times, tokens = [], [], []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=rng)
        act_seconds = time.perf_counter() - start
        policy.train()
        start = time.perf_counter()
        scores = policy.evaluate(out.samples)
        (scores.log_probs.mean() + scores.values.mean()).backward()
        evaluate_seconds = time.perf_counter() - start
        policy.eval()
        if repeat > 0:  # the first round warms up allocators and kernels
            act_times.append(act_seconds)
            evaluate_times.append(evaluate_seconds)
            tokens.append(sum(len(s.completion_ids) for s in out.samples))
    act_median = statistics.median(act_times)
    return {
        "act_s": act_median,
        "evaluate_backward_s": statistics.median(evaluate_times),
        "generated_tokens_per_s": statistics.median(tokens) / act_median,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=TINY_ARCHITECTURES, nargs="+", default=["qwen2_vl"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None, help="Also write the rows to this CSV file.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            path = make_tiny_model(arch, Path(tmp) / arch)
            settings = ModelSettings(path, lora_r=8, lora_alpha=16)
            policy = VLMPolicy.from_model(settings, GenerationSettings(max_new_tokens=args.new_tokens))
            for batch in args.batch_sizes:
                rows.append({"arch": arch, "batch": batch, "new_tokens": args.new_tokens,
                             **time_policy(policy, batch, args.repeats)})  # fmt: skip
    header = "| arch | batch | new tokens | act (s) | evaluate+backward (s) | generated tokens/s |"
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}\n")
    print(header)
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['batch']} | {row['new_tokens']} | {row['act_s']:.3f} | "
              f"{row['evaluate_backward_s']:.3f} | {row['generated_tokens_per_s']:.0f} |")  # fmt: skip
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
