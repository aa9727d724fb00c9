"""The CPU demo's warm start: a tiny random model, aligned to read the image, then SFT on
demonstrations. It composes the ``make-tiny-model``, ``align`` and ``sft`` commands' functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlm_agent.demo.alignment import VLMAlignConfig
from vlm_agent.training.ppo_config import VLMPPOConfig
from vlm_agent.training.ppo_trainer import prepare_run, train


def prepare_base_model(config: VLMPPOConfig, run_dir: Path) -> Path:
    """The model PPO starts from when none is given: the tiny model, warm-started by SFT.

    With `align_*_steps` the tiny model gets legible vision settings and is aligned to read the
    env's image first (`vlm_agent.demo.alignment`, in `run_dir/aligned_model`); its SFT then trains
    the language model's layers alone, which keeps the reading (a whole-model SFT erased it).
    Built once per run directory (`run_dir/base_model`); a resumed run reuses it.
    """
    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.training.sft import VLMSFTConfig, run_sft

    base_dir = run_dir / "base_model"
    done_marker = base_dir / "WARM_START_DONE"
    if done_marker.is_file():
        return base_dir
    if config.aligns_warm_start:
        from vlm_agent.demo.alignment import run_alignment

        start = run_alignment(warm_start_alignment(config, str(run_dir / "aligned_model"))).model_dir
    else:
        start = make_tiny_model(config.tiny_arch, run_dir / "tiny_random_model", seed=config.seed)
    sft_config = VLMSFTConfig(
        model_name_or_path=str(start),
        env_id=config.env_id,
        env_kwargs=config.env_kwargs,
        num_demos=config.sft_num_demos,
        epochs=config.sft_epochs,
        learning_rate=config.sft_learning_rate,
        wrong_action_rate=config.sft_wrong_action_rate,
        use_cot=config.use_cot,
        show_state=config.show_state,
        seed=config.seed,
        output_dir=str(base_dir),
        progress_bar=config.progress_bar,
        language_only=config.aligns_warm_start,
    )
    run_sft(sft_config)
    from vlm_agent.agents.settings import write_agent_settings

    # The warm start is evaluated as the PPO run acts (prompt, answer length, invalid-answer rule).
    write_agent_settings(base_dir, config.agent_settings())
    done_marker.write_text("SFT warm start complete\n")
    return base_dir


def warm_start_alignment(config: VLMPPOConfig, output_dir: str) -> VLMAlignConfig:
    """The `VLMAlignConfig` that aligns the tiny warm start of a run (its `align_*_steps`)."""
    return VLMAlignConfig(
        tiny_arch=config.tiny_arch, env_ids=[config.env_id], num_examples=config.align_num_examples,
        projector_steps=config.align_projector_steps, language_steps=config.align_language_steps,
        seed=config.seed, output_dir=output_dir, progress_bar=config.progress_bar,
    )


def check_demo(config: VLMPPOConfig) -> None:
    """Refuse a demo run whose alignment cannot run (an env without a read-out, an architecture
    without a projector), before anything is built.

    Raises:
        ValueError: What is wrong and how to fix it.
    """
    if not (config.aligns_warm_start and config.model_name_or_path is None):
        return
    try:
        warm_start_alignment(config, "")  # the alignment's own checks: env read-out, architecture
    except ValueError as error:
        raise ValueError(
            f"VLMPPOConfig.align_projector_steps={config.align_projector_steps!r} cannot align the warm start "
            f"({error}); set --align_projector_steps 0 --align_language_steps 0, or change what it names."
        ) from None


def train_demo(config: VLMPPOConfig) -> Path:
    """The embedded CPU demo: warm-start a tiny model (`prepare_base_model`), then PPO on it
    (`vlm_agent.training.ppo_trainer.train`); returns the run directory."""
    check_demo(config)
    run_dir = prepare_run(config)  # a refused --resume builds nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    base = prepare_base_model(config, run_dir)
    return train(dataclasses.replace(config, model_name_or_path=str(base)), run_dir=run_dir)
