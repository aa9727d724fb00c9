"""Policy speed: acting (HFEngine.generate: generation + scoring) and evaluate (forward + backward) on tiny models.

Acting (:meth:`vlm_agent.rollout.engine.HFEngine.generate`, what the rollout engine does for one
batch, before the loop parses the answers) is timed both ways it can score its answers: from what
generation measured on the way (the default: each drawn token's log-prob, the prompt's last hidden
state from the prefill) and with ``recompute_scores=True`` (a second forward over prompt + answer,
:meth:`vlm_agent.models.policy.VLMPolicy.evaluate`). The two are timed interleaved, so that a busy
shared machine slows both alike. The tiny models are random, so they rarely stop before
``--new-tokens``: every answer is full length, the worst case. One torch thread.

Writes ``benchmarks/results/policy_speed.{md,csv}``.

Usage (from the repository root)::

    python -m benchmarks.policy_speed
    python -m benchmarks.policy_speed --arch qwen2_vl llava_next --batch-sizes 1 8 --new-tokens 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.make_readme import RESULTS_DIR, machine_description, write_csv_results

RESULT_NAME = "policy_speed"
COLUMNS = (
    "arch",
    "batch",
    "new_tokens",
    "act_s",
    "act_cpu_s",
    "act_recompute_s",
    "act_recompute_cpu_s",
    "act_speedup",
    "evaluate_backward_s",
    "generated_tokens_per_s",
)


def _timed(function: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def time_policy(policy: Any, batch: int, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` (after one warm-up) of acting, acting with recomputed scores, and evaluate + backward."""
    from vlm_agent.prompting.env_prompts import prompt_for
    from vlm_agent.rollout.engine import HFEngine

    rng = np.random.default_rng(0)
    template = prompt_for("gym_cards/NumberLine-v0")
    images = [rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8) for _ in range(batch)]
    prompts = [template.render("", ["-", "+"])] * batch
    legal = [["-", "+"]] * batch
    engine = HFEngine(policy, rng)
    recomputing = HFEngine(policy, rng, recompute_scores=True)
    times: dict[str, list[float]] = {name: [] for name in ("act", "act_cpu", "recompute", "recompute_cpu", "evaluate")}
    tokens = []
    for repeat in range(repeats + 1):
        samples, act_wall, act_cpu = _timed(lambda: engine.generate(images, prompts, legal))
        _, recompute_wall, recompute_cpu = _timed(lambda: recomputing.generate(images, prompts, legal))
        policy.train()

        def evaluate_backward(samples: list = samples) -> None:
            scores = policy.evaluate(samples)
            (scores.log_probs.mean() + scores.values.mean()).backward()

        _, evaluate_wall, _ = _timed(evaluate_backward)
        policy.eval()
        for parameter in policy.trainable_parameters():
            parameter.grad = None
        if repeat > 0:  # the first round warms up allocators and kernels
            for name, value in zip(
                times, (act_wall, act_cpu, recompute_wall, recompute_cpu, evaluate_wall), strict=True
            ):
                times[name].append(value)
            tokens.append(sum(len(s.completion_ids) for s in samples))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "act_s": medians["act"],
        "act_cpu_s": medians["act_cpu"],
        "act_recompute_s": medians["recompute"],
        "act_recompute_cpu_s": medians["recompute_cpu"],
        "act_speedup": medians["recompute"] / medians["act"],
        "evaluate_backward_s": medians["evaluate"],
        "generated_tokens_per_s": statistics.median(tokens) / medians["act"],
    }


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """Write ``policy_speed.{md,csv}`` into ``args.out_dir``; returns the Markdown path."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_results(out / f"{RESULT_NAME}.csv", COLUMNS, rows, ".4f")
    lines = [
        (
            "| arch | batch | new tokens | act (s) | act CPU (s) | act, recomputed scores (s) | act speedup "
            "| evaluate + backward (s) | generated tokens/s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['batch']} | {r['new_tokens']} | {r['act_s']:.3f} | {r['act_cpu_s']:.3f} | "
            f"{r['act_recompute_s']:.3f} | {r['act_speedup']:.2f}x | {r['evaluate_backward_s']:.3f} | "
            f"{r['generated_tokens_per_s']:.0f} |"
        )
    command = "python -m benchmarks.policy_speed" + ("" if not argv else " " + " ".join(argv))
    lines += [
        "",
        (
            f"Median of {args.repeats} timed repeats after one warm-up, {args.threads} torch thread(s), tiny random "
            "models with LoRA r=8, 300x300 random images, NumberLine CoT prompt. 'act' is one batch of the rollout "
            "engine (`HFEngine.generate`: generation and scoring) and scores answers from what generation measured "
            "(no second forward); 'act, recomputed scores' re-scores them with a second forward "
            "(`HFEngine(..., recompute_scores=True)`), timed interleaved with it; 'act speedup' is the ratio of the two. "
            "'evaluate + backward' is one PPO mini-batch step's model work."
        ),
        "",
        machine_description() + ".",
        "",
        f"Command: `{command}`",
    ]
    path = out / f"{RESULT_NAME}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Time every (arch, batch size), print the table, write the result files."""
    from vlm_agent.training.ppo_config import TINY_ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=TINY_ARCHITECTURES, nargs="+", default=["qwen2_vl"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.new_tokens < 1 or any(b < 1 for b in args.batch_sizes):
        parser.error("--repeats, --new-tokens and --batch-sizes must be positive")

    import torch

    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings

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
    path = write_results(rows, args, list(sys.argv[1:] if argv is None else argv))
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path.with_suffix('')}.{{md,csv}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
