"""Prompting baselines: Table 1 of the RL4VLM paper for any model you can reach.

The paper compares its RL-trained agent with prompted GPT-4V and Gemini. This script runs the
same comparison for any method: every method sees the same prompts (``vlm_agent.prompts``) and
its answers go through the same parser (``vlm_agent.parsing``) as during training, on held-out
seeds, so the numbers compare with ``vlm-agent eval`` results of a trained policy.

Methods:

- ``random``, ``expert``: floor and ceiling, no model needed.
- ``openai:MODEL``: any OpenAI-compatible server. Public OpenAI needs ``OPENAI_API_KEY``; for a
  self-hosted server pass ``--base-url`` (vLLM: ``http://localhost:8000/v1``, Ollama:
  ``http://localhost:11434/v1``).
- ``gemini:MODEL``: Gemini, key from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``.
- ``local:PATH``: a saved ``vlm_agent`` policy or Hugging Face model folder.

Keys are read from environment variables only. With ``--cache-dir`` every answer is stored on
disk, so an interrupted run restarted with the same arguments pays only for what is missing.

Examples::

    python benchmarks/prompting_baselines.py --methods random expert --episodes 200
    OPENAI_API_KEY=... python benchmarks/prompting_baselines.py --methods openai:gpt-4o \\
        --episodes 100 --cache-dir .cache/answers
    python benchmarks/prompting_baselines.py --methods openai:Qwen/Qwen2.5-VL-7B-Instruct \\
        --base-url http://localhost:8000/v1 --concurrency 16 --num-envs 16

Writes ``<out-dir>/<stem>.md``, ``.csv``, ``.png`` (bar chart with 95% intervals) and ``.json``
(per-episode records); by default ``benchmarks/results/prompting_baselines.*``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vlm_agent.baselines import METHOD_SPEC_HELP
from vlm_agent.baselines.remote_agent import ModelRequestError
from vlm_agent.evaluation import CARD_ENV_IDS, EvalConfig, results_markdown, run_eval

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"

PUBLISHED_PROMPTING = """
## For comparison: published numbers (not measured here)

Zhai et al. 2024 (RL4VLM), Table 1, episode success rate in %, their environments and prompts:

| method | NumberLine | EZPoints | Points24 | Blackjack |
|---|---|---|---|---|
| GPT-4V prompting | 65.5 | 10.5 | 0 | 25.5 |
| Gemini prompting | 82.5 | 2.0 | 0 | 30.0 |
| RL4VLM (LLaVA-1.6-7B, SFT + RL) | 89.4 | 50.0 | 2.3 | 40.2 |
"""


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    """Command-line arguments to an :class:`EvalConfig`."""
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(
        description="Evaluate prompted models, random and expert players on the gym_cards "
                    "environments with the trainer's prompts and parser.",
    )
    parser.add_argument("--methods", nargs="+", default=["random", "expert"],
                        help=f"methods to evaluate, each {METHOD_SPEC_HELP}")
    parser.add_argument("--envs", nargs="+", default=list(CARD_ENV_IDS),
                        help="environment ids (default: the four card games)")
    parser.add_argument("--episodes", type=int, default=defaults.episodes,
                        help="episodes per method and environment")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="run seed; episode i uses seed 1e9 + seed + i (held out from training)")
    parser.add_argument("--action-only", action="store_true",
                        help="ask for {\"action\"} only instead of chain-of-thought")
    parser.add_argument("--show-state", action="store_true",
                        help="also describe the state in text (for text-only models)")
    parser.add_argument("--invalid-policy", choices=("random", "penalty"),
                        default=defaults.invalid_policy,
                        help="unusable answers: random legal move (the paper) or penalty")
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs,
                        help="environments stepped side by side (one request batch per step)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help="API requests in flight at once")
    parser.add_argument("--base-url", default=None,
                        help="server of openai:/gemini: methods (vLLM, SGLang, Ollama, proxy)")
    parser.add_argument("--cache-dir", default=None,
                        help="on-disk answer cache; reruns send no request twice")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s,
                        help="per-request timeout in seconds")
    parser.add_argument("--max-retries", type=int, default=defaults.max_retries,
                        help="retries after 429, 5xx and timeouts (exponential backoff)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature,
                        help="sampling temperature (paper: 0.2)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help="answer length limit (paper: 256)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="results folder")
    parser.add_argument("--stem", default="prompting_baselines", help="results file name stem")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        return EvalConfig(
            methods=tuple(args.methods), env_ids=tuple(args.envs), episodes=args.episodes,
            seed=args.seed, cot=not args.action_only, show_state=args.show_state,
            invalid_policy=args.invalid_policy, num_envs=args.num_envs,
            concurrency=args.concurrency, base_url=args.base_url, cache_dir=args.cache_dir,
            timeout_s=args.timeout, max_retries=args.max_retries,
            temperature=args.temperature, max_new_tokens=args.max_new_tokens,
            out_dir=args.out_dir, stem=args.stem,
            title="Prompting baselines" + (" (action only)" if args.action_only else ""),
            progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))
        raise  # parser.error exits; this line is for type checkers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the Markdown table and where the files went; 0 on success."""
    config = parse_args(argv)
    try:
        results, paths = run_eval(config)
    except (ValueError, ModelRequestError) as error:
        # Our own messages (missing key, unknown method, server gave up) say what to do;
        # a traceback would add nothing.
        print(f"error: {error}", file=sys.stderr)
        return 2
    with paths["md"].open("a", encoding="utf-8") as markdown:
        markdown.write(PUBLISHED_PROMPTING)
    print(results_markdown(results, config.title))
    for suffix, path in paths.items():
        print(f"wrote {suffix}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
