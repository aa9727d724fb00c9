"""The `vlm-agent` command: train | eval | sft | align | make-tiny-model | env.

Every subcommand reads its options from a dataclass (each field's `help` is its `--help` line)
through `trl.TrlParser`, so `--config file.yaml` (or `--config=file.yaml`) sets the same options by
name and command-line flags override the file. The file is read and type-checked by
`vlm_agent.config_files` before anything runs. User errors (a bad option, an unusable config file,
a damaged or mismatched checkpoint) end in one `vlm-agent <command>: error: ...` line and exit
status 2 (options) or 1 (checkpoints), without a traceback.

    vlm-agent train                                   # the embedded CPU demo (tiny model, NumberLine)
    vlm-agent train --config my_run.yaml --seed 3
    vlm-agent eval --methods local:runs/<run> --env_ids gym_cards/NumberLine-v0
    vlm-agent sft --env_id gym_cards/Blackjack-v0 --output_dir sft_blackjack
    vlm-agent align --output_dir aligned_tiny          # a tiny model that reads the card images
    vlm-agent make-tiny-model --arch llava_next tiny_llava
    vlm-agent env                                     # versions, for bug reports
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

#: The embedded configuration `vlm-agent train` uses when neither a model nor --config is given.
DEFAULT_TRAIN_CONFIG = "tiny_numberline_cpu.yaml"

#: The embedded configuration for a bare `vlm-agent train --env_id <another env>`: the same demo with
#: the state also given as text (the tiny model's image alignment reads only NumberLine well).
TEXT_STATE_TRAIN_CONFIG = "tiny_numberline_text_cpu.yaml"
DEFAULT_TRAIN_ENV = "gym_cards/NumberLine-v0"

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

    class OneLineErrorParser(TrlParser):
        """argparse prints the whole usage (dozens of lines for train) before an error; one line is enough."""

        def error(self, message: str) -> typing.NoReturn:
            self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")

    description = TRAIN_DESCRIPTION if command == "train" else COMMANDS[command]
    parser = OneLineErrorParser(dataclass_type, prog=f"vlm-agent {command}", description=description)
    # `_parse` reads --config itself; declaring it here documents it in --help.
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file setting any of the options below by name.")
    return parser


def _split_config(argv: list[str]) -> tuple[list[str], str | None]:
    """`argv` without its `--config FILE` / `--config=FILE`, and FILE (None when not given)."""
    rest: list[str] = []
    paths: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--config":
            value = next(tokens, None)
            if value is None or value.startswith("--"):
                raise ValueError("--config needs a file: --config FILE.yaml")
            paths.append(value)
        elif token.startswith("--config="):
            paths.append(token.split("=", 1)[1])
        else:
            rest.append(token)
    if len(paths) > 1:
        raise ValueError(f"--config is given {len(paths)} times ({', '.join(paths)}); give one file")
    return rest, (paths[0] if paths else None)


def _has_config(argv: list[str]) -> bool:
    return any(token == "--config" or token.startswith("--config=") for token in argv)


def _parse(dataclass_type: type, command: str, argv: list[str], comma_separated: tuple[str, ...] = ()):
    """The options dataclass from `argv`: config file (type-checked) first, flags over it.

    `comma_separated`: text options a config file may write as a YAML list.
    """
    from vlm_agent.config_files import check_options, read_config_file

    parser = _parser(dataclass_type, command)
    try:
        argv, config_path = _split_config(argv)
        if config_path is not None:
            options = check_options(
                read_config_file(config_path), dataclass_type, source=config_path,
                comma_separated=comma_separated,
            )
            # Checked values become the defaults, so command-line flags still override the file.
            parser.set_defaults_with_config(**options)
        # The first output is the dataclass; a second one holds the documented-only --config.
        parsed = parser.parse_args_into_dataclasses(args=argv)[0]
    except ValueError as error:  # config files, __post_init__ validation
        parser.error(str(error))
    return parsed


TRAIN_DESCRIPTION = (
    COMMANDS["train"]
    + f" A bare `vlm-agent train` (no --config, no --model_name_or_path) runs the embedded CPU demo, "
    f"vlm_agent/configs/{DEFAULT_TRAIN_CONFIG} (tiny model, NumberLine from the image alone, about 9 minutes on 2 cores); the defaults "
    "shown below are the paper's and apply as soon as --config or --model_name_or_path is given."
)


def _fail(command: str, message: str) -> int:
    """A user error: one line on stderr, exit status 2 (as argparse does), no traceback."""
    print(f"vlm-agent {command}: error: {message}", file=sys.stderr)
    return 2


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` (``--flag V`` or ``--flag=V``; the last one wins), or None."""
    value = None
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def _train(argv: list[str]) -> int:
    from vlm_agent.training.ppo_config import VLMPPOConfig

    if not _has_config(argv) and not any(a.startswith("--model_name_or_path") for a in argv) and not {
        "-h",
        "--help",
    } & set(argv):
        env_id = _flag_value(argv, "--env_id")
        embedded = DEFAULT_TRAIN_CONFIG if env_id in (None, DEFAULT_TRAIN_ENV) else TEXT_STATE_TRAIN_CONFIG
        if embedded != DEFAULT_TRAIN_CONFIG:
            print(f"vlm-agent train: the embedded demo on {env_id} gives the tiny model the state as text too "
                  f"(vlm_agent/configs/{embedded}): its image alignment reads only {DEFAULT_TRAIN_ENV} well")
        argv = ["--config", str(embedded_config_path(embedded)), *argv]
        # The demo builds its model locally and needs nothing from the model hub: make sure that
        # nothing (a hub lookup, TRL's usage ping) tries the network. Read by huggingface_hub at
        # import, so before TrlParser is imported.
        os.environ["HF_HUB_OFFLINE"] = "1"
    config = _parse(VLMPPOConfig, "train", argv, comma_separated=VLMPPOConfig.COMMA_SEPARATED)
    from vlm_agent.rollout.environments import check_env

    try:
        check_env(config.env_id, config.env_kwargs)  # before a model is built or a run folder is made
    except ValueError as error:
        return _fail("train", str(error))
    if config.model_name_or_path is None:
        from vlm_agent.demo.warm_start import check_demo, train_demo

        try:
            check_demo(config)
        except ValueError as error:
            return _fail("train", str(error))
        run_dir = train_demo(config)
    else:
        from vlm_agent.training.ppo_trainer import train

        run_dir = train(config)
    env_kwargs = f" --env_kwargs '{json.dumps(config.env_kwargs)}'" if config.env_kwargs else ""
    evaluate = f"vlm-agent eval --methods local:{run_dir} --env_ids {config.env_id}{env_kwargs}"
    print(f"Run written to {run_dir}")
    print(f"  metrics:        {run_dir / 'metrics.csv'} (and metrics.jsonl)")
    print(f"  learning curve: {run_dir / 'learning_curve.png'}")
    print(f"  samples:        {run_dir / 'samples.jsonl'}")
    print(f"  policy:         {run_dir / 'policy'} (with the prompt and sampling settings it was trained with)")
    if config.final_eval_episodes > 0:
        from vlm_agent.evaluation.comparison import compare_before_after

        warm_start = Path(config.model_name_or_path or run_dir / "base_model")
        warm_start = warm_start if warm_start.is_dir() else None  # a hub id: nothing local to evaluate
        results, paths = compare_before_after(
            run_dir, env_id=config.env_id, env_kwargs=config.env_kwargs, warm_start=warm_start,
            episodes=config.final_eval_episodes, blank_control=not config.show_state,
            seed=config.seed, progress=config.progress_bar,
        )
        from vlm_agent.training.learning_curve import plot_learning_curve
        from vlm_agent.training.run_logs import LEARNING_CURVE_PNG, METRICS_JSONL

        plot_learning_curve(run_dir / METRICS_JSONL, run_dir / LEARNING_CURVE_PNG, title=config.env_id,
                            levels={result.method: result.success_rate for result in results})
        print(f"  comparison:     {paths['md']} (and .csv)")
    print(f"  evaluate it:    {evaluate}")
    if config.final_eval_episodes > 0:
        print()
        print(f"Held-out success on {config.env_id} ({config.final_eval_episodes} episodes each):")
        print(comparison_table(results))
    return 0


def comparison_table(results) -> str:
    """Fixed-width text table of the before/after comparison, for the terminal."""
    lines = [f"  {'method':<24} {'success':>8} {'95% interval':>16} {'invalid':>8}"]
    for result in results:
        low, high = result.ci95
        lines.append(f"  {result.method:<24} {100 * result.success_rate:7.1f}% "
                     f"[{100 * low:5.1f}, {100 * high:5.1f}]% {100 * result.invalid_rate:7.1f}%")
    return "\n".join(lines)


def _eval(argv: list[str]) -> int:
    from vlm_agent.evaluation.eval_config import EvalConfig

    config = _parse(EvalConfig, "eval", argv)
    from vlm_agent.agents.remote import ModelRequestError
    from vlm_agent.evaluation.evaluate import run_eval
    from vlm_agent.evaluation.tables import results_markdown

    try:
        results, paths = run_eval(config)
    except (ValueError, FileNotFoundError, ModelRequestError) as error:
        # Our own messages (unknown env id or method, missing folder, missing key, server gave up)
        # say what to do; a traceback would add nothing.
        return _fail("eval", str(error))
    print(results_markdown(results))
    print("Written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sft(argv: list[str]) -> int:
    from vlm_agent.training.sft import VLMSFTConfig, run_sft

    config = _parse(VLMSFTConfig, "sft", argv)
    from vlm_agent.rollout.environments import check_env

    try:
        check_env(config.env_id, config.env_kwargs)  # before a model is built or anything is written
    except ValueError as error:
        return _fail("sft", str(error))
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))  # see ppo_trainer.prepare_run
    if config.model_name_or_path is None:
        from vlm_agent.demo.tiny_models import make_tiny_model

        tiny = make_tiny_model(config.tiny_arch, Path(config.output_dir) / "tiny_random_model", seed=config.seed)
        config = dataclasses.replace(config, model_name_or_path=str(tiny))
    result = run_sft(config)
    print(f"SFT model written to {result.model_dir} (loss {result.first_loss:.3f} -> {result.last_loss:.3f})")
    return 0


def _align(argv: list[str]) -> int:
    from vlm_agent.demo.alignment import VLMAlignConfig, run_alignment

    config = _parse(VLMAlignConfig, "align", argv)
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))  # see ppo_trainer.train
    try:
        result = run_alignment(config)
    except ValueError as error:  # e.g. a model whose architecture has no projector stage
        print(f"vlm-agent align: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    losses = result.losses
    for slot in result.slots:
        item = "" if slot.index is None else f"[{slot.index} of {slot.length}]"
        print(f"  {slot.env_id} {slot.key}{item}: image token {slot.token} (tells values apart on "
              f"{100 * slot.accuracy:.0f}% of held-back images)")
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

    from vlm_agent.demo.tiny_models import VisionSettings, make_tiny_model

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
    # TRL's trainers send a usage ping to the Hugging Face hub unless this is set; a research tool
    # should not phone home by default. `HF_HUB_DISABLE_TELEMETRY=0` turns the ping back on.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
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
    try:
        return HANDLERS[arguments.command](argv[1:])
    except Exception as error:
        # Only a module that was imported can have raised its error: checking through sys.modules
        # keeps `vlm-agent env` and `--help` from importing torch.
        checkpoint = sys.modules.get("vlm_agent.training.checkpoint")
        if checkpoint is not None and isinstance(error, checkpoint.CheckpointError):
            print(f"vlm-agent {arguments.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
