"""Prompting baselines: Table 1 of the RL4VLM paper for any model you can reach.

The paper compares its RL-trained agent with prompted GPT-4V and Gemini. This script runs the
same comparison for any method: every method sees the same prompts (``vlm_agent.prompting.env_prompts``) and
its answers go through the same parser (``vlm_agent.prompting.parsing``) as during training, on held-out
seeds, so the numbers compare with ``vlm-agent eval`` results of a trained policy.

Methods:

- ``random``, ``expert``: floor and ceiling, no model needed.
- ``openai:MODEL``: any OpenAI-compatible server. Public OpenAI needs ``OPENAI_API_KEY``; for a
  self-hosted server pass ``--base_url`` (vLLM: ``http://localhost:8000/v1``, Ollama:
  ``http://localhost:11434/v1``).
- ``gemini:MODEL``: Gemini, key from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``.
- ``local:PATH``: a saved ``vlm_agent`` policy or Hugging Face model folder.

Keys are read from environment variables only. With ``--cache_dir`` every answer is stored on
disk, so an interrupted run restarted with the same arguments pays only for what is missing.

The options are the fields of :class:`vlm_agent.evaluation.eval_config.EvalConfig`, exactly as for
``vlm-agent eval`` (``--help`` lists them; ``--config FILE.yaml`` sets them by name); only the
defaults differ: the four card games, ``benchmarks/results/`` and the stem
``prompting_baselines``.

Examples::

    python benchmarks/prompting_baselines.py --methods random expert --episodes 200
    OPENAI_API_KEY=... python benchmarks/prompting_baselines.py --methods openai:gpt-4o \\
        --episodes 100 --cache_dir .cache/answers
    python benchmarks/prompting_baselines.py --methods openai:Qwen/Qwen2.5-VL-7B-Instruct \\
        --base_url http://localhost:8000/v1 --concurrency 16 --num_envs 16

Writes ``<out_dir>/<stem>.md``, ``.csv``, ``.png`` (bar chart with 95% intervals) and ``.json``
(per-episode records); by default ``benchmarks/results/prompting_baselines.*``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from vlm_agent.agents.remote import ModelRequestError
from vlm_agent.evaluation.eval_config import CARD_ENV_IDS, EvalConfig
from vlm_agent.evaluation.evaluate import run_eval
from vlm_agent.evaluation.tables import results_markdown

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
    """Command-line arguments to an :class:`EvalConfig`, parsed like ``vlm-agent eval``'s."""
    from trl import TrlParser

    parser = TrlParser(
        EvalConfig, prog="python -m benchmarks.prompting_baselines",
        description="Evaluate prompted models, random and expert players on the gym_cards "
                    "environments with the trainer's prompts and parser.",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file setting any of the options below by name.")
    parser.set_defaults(env_ids=list(CARD_ENV_IDS), out_dir=str(DEFAULT_OUT_DIR), stem="prompting_baselines",
                        title="Prompting baselines")
    try:
        config = parser.parse_args_and_config(list(sys.argv[1:] if argv is None else argv))[0]
    except ValueError as error:  # EvalConfig.__post_init__
        parser.error(str(error))
    if config.cot is False and config.title == "Prompting baselines":
        config.title += " (action only)"
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the Markdown table and where the files went; 0 on success."""
    config = parse_args(argv)
    try:
        results, paths = run_eval(config)
    except (ValueError, FileNotFoundError, ModelRequestError) as error:
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
