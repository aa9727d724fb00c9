"""The `vlm-agent` command: train | eval | sft | align | make-tiny-model | env.

Every subcommand reads its options from a dataclass (each field's `help` is its `--help` line)
through `trl.TrlParser`, so `--config file.yaml` sets the same options by name and command-line
flags override the file.

    vlm-agent train                                   # the embedded CPU demo (tiny model, NumberLine)
    vlm-agent train --config my_run.yaml --seed 3
    vlm-agent eval --methods local:runs/<run>/policy --env_ids gym_cards/NumberLine-v0
    vlm-agent sft --env_id gym_cards/Blackjack-v0 --output_dir sft_blackjack
    vlm-agent align --output_dir aligned_tiny          # a tiny model that reads the card images
    vlm-agent make-tiny-model --arch llava_next tiny_llava
    vlm-agent env                                     # versions, for bug reports
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

#: The embedded configuration `vlm-agent train` uses when neither a model nor --config is given.
DEFAULT_TRAIN_CONFIG = "tiny_numberline_cpu.yaml"

COMMANDS = {
    "train": "PPO fine-tuning of a vision-language model on a gym_cards task (default: a CPU demo).",
    "eval": "Success rate (95% interval), mean return and invalid-answer rate on held-out seeds.",
    "sft": "Supervised warm start on expert demonstrations (optionally with deliberate mistakes).",
    "align": "Teach a (tiny) VLM to read the game state from the image (images -> read-outs), before SFT.",
    "make-tiny-model": "Build a tiny random vision-language model offline, for tests and CPU demos.",
    "env": "Print versions of Python, torch, transformers, trl, ... for bug reports.",
}


def embedded_config_path(name: str) -> Path:
    """Path of a YAML file shipped in `vlm_agent/configs/`."""
    return Path(str(resources.files("vlm_agent") / "configs" / name))


def _parser(dataclass_type: type, command: str):
    from trl import TrlParser

    parser = TrlParser(dataclass_type, prog=f"vlm-agent {command}", description=COMMANDS[command])
    # TrlParser consumes --config itself; declaring it here only documents it in --help.
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file setting any of the options below by name.")
    return parser


def _parse(dataclass_type: type, command: str, argv: list[str]):
    parser = _parser(dataclass_type, command)
    try:
        # The first output is the dataclass; a second one holds the documented-only --config.
        parsed = parser.parse_args_and_config(argv)[0]
    except ValueError as error:  # __post_init__ validation and unknown YAML keys
        parser.error(str(error))
    return parsed


def _train(argv: list[str]) -> int:
    from vlm_agent.ppo_config import VLMPPOConfig

    if "--config" not in argv and not any(a.startswith("--model_name_or_path") for a in argv) and not {
        "-h",
        "--help",
    } & set(argv):
        argv = ["--config", str(embedded_config_path(DEFAULT_TRAIN_CONFIG)), *argv]
    config = _parse(VLMPPOConfig, "train", argv)
    from vlm_agent.ppo_trainer import train

    run_dir = train(config)
    prompt_flags = ("" if config.use_cot else " --no_cot") + (" --show_state" if config.show_state else "")
    evaluate = f"vlm-agent eval --methods local:{run_dir / 'policy'} --env_ids {config.env_id}{prompt_flags}"
    print(f"Run written to {run_dir}")
    print(f"  metrics:        {run_dir / 'metrics.csv'} (and metrics.jsonl)")
    print(f"  learning curve: {run_dir / 'learning_curve.png'}")
    print(f"  samples:        {run_dir / 'samples.jsonl'}")
    print(f"  policy:         {run_dir / 'policy'}")
    print(f"  evaluate it:    {evaluate}")
    return 0


@dataclass
class EvalArguments:
    """Options of `vlm-agent eval` (see `vlm_agent.evaluation.EvalConfig`)."""

    methods: list[str] = field(
        default_factory=lambda: ["random", "expert"],
        metadata={
            "help": "Agents to evaluate: random, expert, local:PATH (a trained policy, e.g. runs/<run>/policy), "
            "openai:MODEL, gemini:MODEL."
        },
    )
    env_ids: list[str] = field(
        default_factory=lambda: ["gym_cards/NumberLine-v0"], metadata={"help": "Environments to evaluate on."}
    )
    episodes: int = field(default=100, metadata={"help": "Episodes per (method, environment)."})
    seed: int = field(default=0, metadata={"help": "Run seed; held-out episode seeds are derived from it."})
    cot: bool = field(default=True, metadata={"help": "Chain-of-thought prompt (False: action-only prompt)."})
    show_state: bool = field(
        default=False, metadata={"help": "Card games: also write the state as text into the prompt (text-only models)."}
    )
    invalid_policy: str = field(default="random", metadata={"help": "Unusable answers: random or penalty."})
    num_envs: int = field(default=1, metadata={"help": "Environments stepped side by side (one batch per step)."})
    base_url: str | None = field(default=None, metadata={"help": "Server of openai:/gemini: methods."})
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=256, metadata={"help": "Answer length limit, tokens."})
    cache_dir: str | None = field(default=None, metadata={"help": "Response cache of API methods."})
    out_dir: str = field(default="eval_results", metadata={"help": "Folder for Markdown, CSV, PNG and JSON results."})
    stem: str = field(default="evaluation", metadata={"help": "File name stem of the results."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def _eval(argv: list[str]) -> int:
    arguments = _parse(EvalArguments, "eval", argv)
    from vlm_agent.evaluation import EvalConfig, results_markdown, run_eval

    config = EvalConfig(
        methods=tuple(arguments.methods),
        env_ids=tuple(arguments.env_ids),
        episodes=arguments.episodes,
        seed=arguments.seed,
        cot=arguments.cot,
        show_state=arguments.show_state,
        invalid_policy=arguments.invalid_policy,
        num_envs=arguments.num_envs,
        base_url=arguments.base_url,
        temperature=arguments.temperature,
        max_new_tokens=arguments.max_new_tokens,
        cache_dir=arguments.cache_dir,
        out_dir=arguments.out_dir,
        stem=arguments.stem,
        progress=arguments.progress,
    )
    results, paths = run_eval(config)
    print(results_markdown(results))
    print("Written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sft(argv: list[str]) -> int:
    from vlm_agent.sft import VLMSFTConfig, run_sft

    config = _parse(VLMSFTConfig, "sft", argv)
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))  # see ppo_trainer.train
    result = run_sft(config)
    print(f"SFT model written to {result.model_dir} (loss {result.first_loss:.3f} -> {result.last_loss:.3f})")
    return 0


def _align(argv: list[str]) -> int:
    from vlm_agent.alignment import VLMAlignConfig, run_alignment

    config = _parse(VLMAlignConfig, "align", argv)
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))  # see ppo_trainer.train
    result = run_alignment(config)
    losses = result.vision_losses + result.full_losses
    print(f"aligned model written to {result.model_dir} (loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses
          else f"model written unchanged to {result.model_dir} (no alignment steps)")
    for accuracy in result.accuracy:
        fields = ", ".join(f"{key} {100 * value:.0f}%" for key, value in accuracy.fields.items())
        print(f"  {accuracy.env_id} {'blank image' if accuracy.blank else 'image'}: {fields}")
    return 0


@dataclass
class TinyModelArguments:
    """Options of `vlm-agent make-tiny-model`."""

    out_dir: str = field(
        default="tiny_model",
        metadata={"help": "Folder to write the model and processor to (also accepted as a plain last argument)."},
    )
    arch: str = field(
        default="qwen2_vl", metadata={"help": "qwen2_vl, qwen2_5_vl, llava_next, idefics3 or gemma3."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights and the tokenizer corpus."})
    hidden_size: int = field(default=128, metadata={"help": "Language-model width (a multiple of 32)."})
    num_layers: int = field(default=4, metadata={"help": "Language-model depth."})
    image_size: int = field(
        default=112, metadata={"help": "Side of the processed images, pixels (a multiple of 28; 168 makes the cards legible)."}
    )
    vision_width: int = field(default=64, metadata={"help": "Vision tower width (a multiple of 16)."})
    vision_depth: int = field(default=2, metadata={"help": "Vision tower layers."})


def _positional_out_dir(argv: list[str]) -> list[str]:
    """`make-tiny-model --arch qwen2_vl OUT`: turn the one bare argument into `--out_dir OUT`.

    Every option of the command takes a value, so a bare token is a value exactly when the token
    before it is an option without `=`.
    """
    rewritten: list[str] = []
    for index, token in enumerate(argv):
        previous = argv[index - 1] if index else ""
        is_value = previous.startswith("-") and "=" not in previous and previous not in ("-h", "--help")
        if not token.startswith("-") and not is_value:
            rewritten += ["--out_dir", token]
        else:
            rewritten.append(token)
    return rewritten


def _make_tiny_model(argv: list[str]) -> int:
    arguments = _parse(TinyModelArguments, "make-tiny-model", _positional_out_dir(argv))
    from transformers import AutoModelForImageTextToText

    from vlm_agent.tiny_models import VisionSettings, make_tiny_model

    try:
        vision = VisionSettings(arguments.image_size, arguments.vision_width, arguments.vision_depth)
    except ValueError as error:
        _parser(TinyModelArguments, "make-tiny-model").error(str(error))
    path = make_tiny_model(
        arguments.arch, arguments.out_dir, seed=arguments.seed,
        hidden_size=arguments.hidden_size, num_layers=arguments.num_layers, vision=vision,
    )
    parameters = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(path).parameters())
    print(f"wrote a tiny {arguments.arch} model ({parameters / 1e6:.2f}M random parameters) to {path}")
    return 0


def environment_report() -> str:
    """Versions of everything that matters for a bug report, one `name: version` per line."""
    from importlib import metadata

    lines = [f"platform: {platform.platform()}", f"python: {sys.version.split()[0]}"]
    for package in ("gym-cards-vlm", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
                    "gymnasium", "numpy", "pillow", "deepspeed", "alfworld"):
        try:
            lines.append(f"{package}: {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    try:
        import torch

        accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
        lines.append(f"cuda device: {accelerator}")
    except ImportError:
        pass
    return "\n".join(lines)


def _env(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlm-agent env", description=COMMANDS["env"])
    parser.parse_args(argv)
    print(environment_report())
    return 0


HANDLERS = {
    "train": _train,
    "eval": _eval,
    "sft": _sft,
    "align": _align,
    "make-tiny-model": _make_tiny_model,
    "env": _env,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `vlm-agent`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="vlm-agent",
        description="PPO fine-tuning of vision-language models as decision-making agents (after RL4VLM).",
        epilog="Commands:\n" + "\n".join(f"  {name:16s} {text}" for name, text in COMMANDS.items())
        + "\n\nRun `vlm-agent <command> --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    arguments = top.parse_args(argv[:1])
    return HANDLERS[arguments.command](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
