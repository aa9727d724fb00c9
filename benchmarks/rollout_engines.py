"""Rollout engines compared: Hugging Face ``generate`` in-process vs a vLLM server, same model, same N.

Each engine plays the same PPO rollout through the one loop (:class:`vlm_agent.rollout.collector.
RolloutCollector` on NumberLine, ``--num-envs`` environments x ``--steps`` steps, CoT prompt), after
one untimed warm-up step (the vLLM server's start and first request, HF's first batch). Reported
per engine: environment steps per second and generated tokens per second of the whole rollout
(generation, scoring, parsing, environment steps), and for vLLM the engine-vs-trainer log-prob
mismatch over every sampled token (mean |delta log p| and the KL estimate). The vLLM engine also
runs the trainer's forward over each answer (its old log-probs and values), which HF gets from
generation itself: that forward is part of its time.

On a CPU with the tiny model (the default: a random tiny Qwen2-VL, LoRA r8 on the language model)
vLLM is *slower* than HF: the comparison shows the path works and what it costs, not vLLM's
advantage, which needs a GPU and a real model size. On a GPU machine with a vLLM venv::

    python -m benchmarks.rollout_engines --model /models/Qwen2.5-VL-3B-Instruct --dtype bfloat16 \\
        --num-envs 32 --steps 4 --new-tokens 256 --vllm-python /opt/vllm/bin/python --server-args ""

Writes ``benchmarks/results/rollout_engines.{md,csv}`` (``--out-dir`` elsewhere).

Usage (from the repository root; needs ``bash .ci/make-vllm-venv`` for the vLLM row)::

    python -m benchmarks.rollout_engines
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.make_readme import (
    RESULTS_DIR,
    write_csv_results,
    write_markdown_results,
)

RESULT_NAME = "rollout_engines"
COLUMNS = ("engine", "num_envs", "steps", "env_steps", "seconds", "env_steps_per_s", "generated_tokens",
           "tokens_per_s", "mean_abs_delta_logp", "kl_engine_trainer")
#: The language model's linear layers (a PEFT regex: Qwen2.5-VL's vision MLP has gate/up/down_proj too):
#: vLLM applies LoRA to the language model only.
LANGUAGE_LORA = r".*\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def measure(engine_name: str, model: str, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """One engine's timed rollout (after a one-step warm-up); its row."""
    import numpy as np

    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.prompting.env_prompts import prompt_for
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
    from vlm_agent.rollout.collector import RolloutCollector
    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.rollout_engines import engine_metrics, make_rollout_engine

    config = VLMPPOConfig(
        model_name_or_path=model, device=args.device, dtype=args.dtype, num_envs=args.num_envs,
        num_steps=args.steps, mini_batch_size=args.num_envs, temperature=args.temperature,
        max_new_tokens=args.new_tokens, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
        # Only checked here: the policy below is built with LANGUAGE_LORA.
        lora_target_modules="q_proj,k_proj,v_proj,o_proj", rollout_engine=engine_name, vllm_url=args.vllm_url,
        vllm_python=args.vllm_python, vllm_server_args=args.server_args, progress_bar=False,
    )
    settings = ModelSettings(model, dtype=args.dtype, device=args.device, lora_r=args.lora_r,
                             lora_alpha=2 * args.lora_r, lora_target_modules=LANGUAGE_LORA)
    policy = VLMPolicy.from_model(settings, GenerationSettings(temperature=args.temperature,
                                                               max_new_tokens=args.new_tokens), seed=0)
    rng = np.random.default_rng(0)
    engine = make_rollout_engine(config, policy, rng, work_dir / engine_name)
    collector = RolloutCollector("gym_cards/NumberLine-v0", args.num_envs, seed=0, engine=engine,
                                 prompt_template=prompt_for("gym_cards/NumberLine-v0", cot=True),
                                 invalid_policy=InvalidActionPolicy(mode="random"), rng=rng)
    try:
        collector.collect(1)  # warm-up: the server's start and first request, HF's first batch
        started = time.perf_counter()
        rollout, stats = collector.collect(args.steps)
        seconds = time.perf_counter() - started
    finally:
        collector.close()
        engine.close()
    mismatch = engine_metrics(rollout.flat_samples(), config)
    env_steps = args.num_envs * args.steps
    return {
        "engine": engine_name, "num_envs": args.num_envs, "steps": args.steps, "env_steps": env_steps,
        "seconds": seconds, "env_steps_per_s": env_steps / seconds, "generated_tokens": stats.generated_tokens,
        "tokens_per_s": stats.generated_tokens / seconds,
        "mean_abs_delta_logp": mismatch.get("engine/mean_abs_delta_logp", ""),
        "kl_engine_trainer": mismatch.get("engine/kl", ""),
    }


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, model_label: str, argv: Sequence[str]) -> Path:
    """Write ``rollout_engines.{md,csv}`` into ``args.out_dir``; returns the Markdown path."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_results(out / f"{RESULT_NAME}.csv", COLUMNS, rows, ".6g")
    lines = [("| engine | env steps | seconds | env steps/s | generated tokens | tokens/s | mean abs delta log p "
              "| KL(engine, trainer) |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mismatch = (f"{r['mean_abs_delta_logp']:.2e} | {r['kl_engine_trainer']:.2e}" if r["mean_abs_delta_logp"] != ""
                    else "- | -")
        lines.append(f"| {r['engine']} | {r['env_steps']} | {r['seconds']:.1f} | {r['env_steps_per_s']:.2f} | "
                     f"{r['generated_tokens']} | {r['tokens_per_s']:.0f} | {mismatch} |")
    command = "python -m benchmarks.rollout_engines" + ("" if not argv else " " + " ".join(argv))
    note = (
        f"One rollout of {args.num_envs} NumberLine environments x {args.steps} steps per engine through the one loop "
        f"(after a one-step warm-up), {model_label}, LoRA r{args.lora_r} on the language model, temperature "
        f"{args.temperature}, up to {args.new_tokens} new tokens, dtype {args.dtype}, device {args.device}. "
        "'hf': Hugging Face generate in-process; 'vllm': a vLLM server over HTTP, plus the trainer's forward over "
        "every answer (old log-probs and values). The mismatch columns compare the engine's per-token log-probs "
        "with the trainer's forward over the same sampled ids (all tokens of the rollout). On a CPU at tiny size "
        "vLLM is slower than HF: its advantage needs a GPU and a real model size."
    )
    path = write_markdown_results(out / f"{RESULT_NAME}.md", lines, note, command)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every engine, print the table, write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: a tiny random Qwen2-VL built here)")
    parser.add_argument("--engines", nargs="+", choices=("hf", "vllm"), default=["hf", "vllm"])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer process (CPU)")
    parser.add_argument("--vllm-url", help="a running vLLM server serving --model (default: start one)")
    parser.add_argument("--vllm-python", help="the vLLM venv's python (default: $VLM_AGENT_VLLM_PYTHON or .venv-vllm)")
    parser.add_argument("--server-args", default="--enforce-eager --max-model-len 1024",
                        help="more flags for the local vLLM server ('' on a GPU)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(argv)
    if min(args.num_envs, args.steps, args.new_tokens, args.lora_r) < 1:
        parser.error("--num-envs, --steps, --new-tokens and --lora-r must be positive")

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp)
        model, label = args.model, f"model {args.model}"
        if model is None:
            from vlm_agent.demo.tiny_models import make_tiny_model

            model, label = str(make_tiny_model("qwen2_vl", work_dir / "tiny_qwen2_vl", seed=0)), "tiny random Qwen2-VL"
        rows = [measure(engine, model, args, work_dir) for engine in args.engines]
    path = write_results(rows, args, label, list(sys.argv[1:] if argv is None else argv))
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path.with_suffix('')}.{{md,csv}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
