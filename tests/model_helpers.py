"""Helpers shared by the model test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

from pathlib import Path


def changed_weights(before: str | Path, after: str | Path) -> set[str]:
    """Names of the weights that differ between two saved models."""
    import torch
    from transformers import AutoModelForImageTextToText

    first = AutoModelForImageTextToText.from_pretrained(before).state_dict()
    second = AutoModelForImageTextToText.from_pretrained(after).state_dict()
    return {name for name in first if not torch.equal(first[name], second[name])}


def assert_language_layers_alone(changed: set[str]) -> None:
    """The language model's layers moved; the vision side, word embeddings and output head did not."""
    assert any(name.startswith("model.language_model.layers.") for name in changed), changed
    assert not any("visual" in name or "embed_tokens" in name or "lm_head" in name for name in changed), changed


def run_cli(argv: list[str]) -> int:
    """`vlm-agent argv` in this process; its exit status (argparse errors exit through SystemExit)."""
    from vlm_agent.cli.main import main

    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def tiny_train_flags(model_dir: Path, run_dir: Path, total_timesteps: int) -> list[str]:
    """`vlm-agent train` flags for updates of 2 envs x 2 steps with 6-token answers: seconds per update."""
    return [
        "train", "--model_name_or_path", str(model_dir), "--device", "cpu", "--num_envs", "2", "--num_steps", "2",
        "--total_timesteps", str(total_timesteps), "--max_new_tokens", "6", "--ppo_epochs", "1",
        "--mini_batch_size", "2", "--gradient_accumulation_steps", "1", "--lora_r", "4", "--lora_alpha", "8",
        "--save_every", "1", "--output_dir", str(run_dir), "--no_progress_bar",
    ]
