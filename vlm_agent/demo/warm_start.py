"""The CPU demo's warm start: a tiny random model, aligned to read the image, then SFT on
demonstrations. It composes the ``make-tiny-model``, ``align`` and ``sft`` commands' functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlm_agent.demo.alignment import VLMAlignConfig
from vlm_agent.training.ppo_config import VLMPPOConfig
from vlm_agent.training.ppo_trainer import prepare_run, train
from vlm_agent.training.stages import StageClock


def prepare_base_model(config: VLMPPOConfig, run_dir: Path, clock: StageClock | None = None) -> Path:
    """The model PPO starts from when none is given: the tiny model, warm-started by SFT.

    With `align_*_steps` the tiny model gets legible vision settings and is aligned to read the
    env's image first (`vlm_agent.demo.alignment`, in `run_dir/aligned_model`); its SFT then trains
    the language model's layers alone, which keeps the reading (a whole-model SFT erased it).
    Built once per run directory (`run_dir/base_model`); a resumed run reuses it. `clock` times
    and announces the stages (alignment, SFT).
    """
    from vlm_agent.demo.tiny_models import make_tiny_model_for_env
    from vlm_agent.training.sft import VLMSFTConfig, run_sft

    base_dir = run_dir / "base_model"
    done_marker = base_dir / "WARM_START_DONE"
    if done_marker.is_file():
        return base_dir
    clock = clock or StageClock()
    if config.aligns_warm_start:
        from vlm_agent.demo.alignment import run_alignment

        steps = f"{config.align_projector_steps} projector + {config.align_language_steps} language-model steps"
        with clock.stage("alignment", f"teaching a tiny model to read {config.env_id}'s image ({steps})"):
            start = run_alignment(warm_start_alignment(config, str(run_dir / "aligned_model"))).model_dir
    else:
        start = make_tiny_model_for_env(config.tiny_arch, run_dir / "tiny_random_model", config.env_id, seed=config.seed)
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
        history_steps=config.history_steps,
        seed=config.seed,
        output_dir=str(base_dir),
        progress_bar=config.progress_bar,
        language_only=config.aligns_warm_start,
    )
    wrong = f", {100 * config.sft_wrong_action_rate:.0f}% deliberately wrong" if config.sft_wrong_action_rate else ""
    with clock.stage("SFT", f"warm start on {config.sft_num_demos} expert demonstrations{wrong}, "
                            f"{config.sft_epochs:g} epoch{'s' if config.sft_epochs != 1 else ''}"):
        run_sft(sft_config)
    from vlm_agent.agents.settings import write_agent_settings

    # The warm start is evaluated as the PPO run acts (prompt, answer length, invalid-answer rule).
    write_agent_settings(base_dir, config.agent_settings())
    done_marker.write_text("SFT warm start complete\n")
    return base_dir


def warm_start_alignment(config: VLMPPOConfig, output_dir: str) -> VLMAlignConfig:
    """The `VLMAlignConfig` that aligns the tiny warm start of a run (its `align_*_steps`)."""
    return VLMAlignConfig(
        tiny_arch=config.tiny_arch, env_ids=[config.env_id], env_kwargs=config.env_kwargs,
        num_examples=config.align_num_examples,
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


def train_demo(config: VLMPPOConfig, clock: StageClock | None = None) -> Path:
    """The embedded CPU demo: warm-start a tiny model (`prepare_base_model`), then PPO on it
    (`vlm_agent.training.ppo_trainer.train`); returns the run directory. `clock` times and
    announces the stages (alignment, SFT, PPO)."""
    check_demo(config)
    clock = clock or StageClock()
    run_dir = prepare_run(config)  # a refused --resume builds nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    clock.say(f"run folder: {run_dir}")
    base = prepare_base_model(config, run_dir, clock)
    ppo_config = dataclasses.replace(config, model_name_or_path=str(base))
    with clock.stage("PPO", ppo_stage_text(ppo_config)):
        return train(ppo_config, run_dir=run_dir)


def ppo_stage_text(config: VLMPPOConfig) -> str:
    """What the PPO stage does, for its announcement: `8 updates of 16 envs x 16 steps, from the image alone`."""
    updates = config.num_updates()
    seen = "the state as text and the image" if config.show_state else "the image alone"
    return (f"{updates} update{'s' if updates != 1 else ''} of {config.num_envs} envs x {config.num_steps} steps "
            f"on {config.env_id}, from {seen}")
