"""The `vlm-agent` command: train | eval | sft | align | make-tiny-model | env.

Every subcommand reads its options from a dataclass (each field's `help` is its `--help` line)
through `trl.TrlParser`, so `--config file.yaml` (or `--config=file.yaml`) sets the same options by
name and command-line flags override the file. The file is read and type-checked by
`vlm_agent.config_files` before anything runs. User errors (a bad option, an unusable config file,
a damaged or mismatched checkpoint, a missing or damaged model) end in one
`vlm-agent <command>: error: ...` line and exit status 2 (options) or 1 (checkpoints, models),
without a traceback; an unknown option names the closest known one. Ctrl-C and SIGTERM end every
command with one line and exit status 130 / 143 (`train` first saves its last complete update and
prints the command that resumes it).

    vlm-agent train                                   # the embedded CPU demo (tiny model, NumberLine)
    vlm-agent train --config my_run.yaml --seed 3
    vlm-agent train --output_dir runs/<run> --resume     # continue a run with its config.json
    vlm-agent eval --methods local:runs/<run> --env_ids gym_cards/NumberLine-v0
    vlm-agent sft --env_id gym_cards/Blackjack-v0 --output_dir sft_blackjack
    vlm-agent align --output_dir aligned_tiny          # a tiny model that reads the card images
    vlm-agent make-tiny-model --arch llava_next tiny_llava
    vlm-agent env                                     # versions, for bug reports
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlm_agent.cli.options import fail, parse
from vlm_agent.cli.train import (
    DEFAULT_TRAIN_CONFIG,
    DEFAULT_TRAIN_ENV,
    TEXT_STATE_TRAIN_CONFIG,
    TRAIN_DESCRIPTION,
    comparison_table,
    embedded_config_path,
    quiet_library_progress_bars,
    train_command,
)
from vlm_agent.cli.train import SUMMARY as TRAIN_SUMMARY

__all__ = [
    "COMMANDS", "DEFAULT_TRAIN_CONFIG", "DEFAULT_TRAIN_ENV", "TEXT_STATE_TRAIN_CONFIG", "comparison_table",
    "embedded_config_path", "environment_report", "main",
]

COMMANDS = {
    "train": TRAIN_SUMMARY,
    "eval": "Success rate (95% interval), mean return and invalid-answer rate on held-out seeds.",
    "sft": "Supervised warm start on expert demonstrations (optionally with deliberate mistakes).",
    "align": "Teach a (tiny) VLM to read the game state from the image (images -> read-outs), before SFT.",
    "make-tiny-model": "Build a tiny random vision-language model offline, for tests and CPU demos.",
    "env": "Print versions of Python, torch, transformers, trl, ... for bug reports.",
}


def _parse(dataclass_type: type, command: str, argv: list[str], comma_separated: tuple[str, ...] = ()):
    """The options dataclass of `command` from `argv` (`vlm_agent.cli.options.parse`)."""
    description = TRAIN_DESCRIPTION if command == "train" else COMMANDS[command]
    return parse(dataclass_type, command, argv, comma_separated, description)


def _fail(command: str, message: str) -> int:
    """A user error: one line on stderr, exit status 2 (as argparse does), no traceback."""
    return fail(command, message)


def _set_torch_threads() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))  # see ppo_trainer.prepare_run


def _train(argv: list[str]) -> int:
    return train_command(argv)


def _eval(argv: list[str]) -> int:
    from vlm_agent.evaluation.eval_config import EvalConfig

    config = _parse(EvalConfig, "eval", argv)
    if not config.progress and any("local:" in method for method in config.methods):
        quiet_library_progress_bars()  # a local model's "Loading weights" bar
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
    from vlm_agent.models.loading import check_model_reference
    from vlm_agent.rollout.environments import check_env

    try:
        check_env(config.env_id, config.env_kwargs)  # before a model is built or anything is written
        if config.model_name_or_path is not None:
            check_model_reference(config.model_name_or_path)
    except ValueError as error:
        return _fail("sft", str(error))
    _set_torch_threads()
    if not config.progress_bar:
        quiet_library_progress_bars()
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
    if config.model_name_or_path is not None:
        from vlm_agent.models.loading import check_model_reference

        try:
            check_model_reference(config.model_name_or_path)  # before anything is built or written
        except ValueError as error:
            return _fail("align", str(error))
    _set_torch_threads()
    if not config.progress_bar:
        quiet_library_progress_bars()
    try:
        result = run_alignment(config)
    except ValueError as error:  # e.g. a model whose architecture has no projector stage
        return fail("align", str(error), status=1)
    losses = result.losses
    for slot in result.slots:
        item = "" if slot.index is None else f"[{slot.index} of {slot.length}]"
        print(f"  {slot.env_id} {slot.key}{item}: image token {slot.token} (tells values apart on "
              f"{100 * slot.accuracy:.0f}% of held-back images)")
    print(f"aligned model written to {result.model_dir} (loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses
          else f"model written unchanged to {result.model_dir} (no alignment steps)")
    for accuracy in result.accuracy:
        fields = ", ".join(f"{key} {100 * value:.0f}%" for key, value in accuracy.fields.items())
        print(f"  {accuracy.env_id} {accuracy.control}: {fields} ({accuracy.states} unseen states)")
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
    from vlm_agent.demo.tiny_models import VisionSettings, make_tiny_model
    from vlm_agent.models.loading import load_pretrained_model

    quiet_library_progress_bars()  # a one-off: the parameter count below loads the model once
    try:
        vision = VisionSettings(arguments.image_size, arguments.vision_width, arguments.vision_depth)
        out_dir = Path(arguments.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out_dir {out_dir} is a file; give a folder to write the model to")
        path = make_tiny_model(
            arguments.arch, out_dir, seed=arguments.seed,
            hidden_size=arguments.hidden_size, num_layers=arguments.num_layers, vision=vision,
        )
    except ValueError as error:
        return _fail("make-tiny-model", str(error))
    parameters = sum(p.numel() for p in load_pretrained_model(path).parameters())
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
    if argv[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; choose one of {', '.join(COMMANDS)}"
        print(f"vlm-agent: error: unknown command {argv[0]!r}{hint}", file=sys.stderr)
        return 2
    command = argv[0]
    # Output reaches a log file line by line (stage lines, tables), not when a buffer fills.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    from vlm_agent.training.interrupts import Interrupted, signals_raise

    try:
        with signals_raise():  # Ctrl-C and SIGTERM end every command with one line
            return HANDLERS[command](argv[1:])
    except KeyboardInterrupt as stop:
        name, status = (stop.signal_name, stop.exit_status) if isinstance(stop, Interrupted) else ("SIGINT", 130)
        print(f"vlm-agent {command}: stopped by {name}", file=sys.stderr, flush=True)
        return status
    except Exception as error:
        # Only a module that was imported can have raised its error: checking through sys.modules
        # keeps `vlm-agent env` and `--help` from importing torch.
        for module, error_class in (("vlm_agent.training.checkpoint", "CheckpointError"),
                                    ("vlm_agent.models.loading", "ModelLoadError"),
                                    ("vlm_agent.rollout.vllm_server", "VLLMError")):
            loaded = sys.modules.get(module)
            if loaded is not None and isinstance(error, getattr(loaded, error_class)):
                return fail(command, str(error), status=1)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
