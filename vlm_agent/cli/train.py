"""`vlm-agent train`: PPO on a given model, or the embedded CPU demo; `--resume` continues a run
folder from its `config.json` (see `vlm_agent.training.run_config`).

The command announces each stage as it goes (the demo's alignment and SFT, PPO, the closing
comparison) with the time since it started, and ends with the seconds by stage and the machine
(`vlm_agent.training.stages`, also written to the run's `timings.json`). Ctrl-C or SIGTERM stops
it with one line: during PPO the trainer saves the last complete update first, and the line names
that checkpoint and the exact command that resumes it (exit status 130 / 143).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from importlib import resources
from pathlib import Path

from vlm_agent.cli.options import fail, given_options, has_config, parse

#: The embedded configuration `vlm-agent train` uses when neither a model nor --config is given.
DEFAULT_TRAIN_CONFIG = "tiny_numberline_cpu.yaml"

#: The embedded configuration for a bare `vlm-agent train --env_id <another env>`: the same demo with
#: the state also given as text (the tiny model's image alignment reads only NumberLine well).
TEXT_STATE_TRAIN_CONFIG = "tiny_numberline_text_cpu.yaml"
DEFAULT_TRAIN_ENV = "gym_cards/NumberLine-v0"

#: Embedded demo configurations of particular envs (the others get TEXT_STATE_TRAIN_CONFIG): ALFWorld's
#: is sized for ALFWorld (action-only answers, a memory of 2 steps, 40 closing episodes per row).
ENV_TRAIN_CONFIGS = {DEFAULT_TRAIN_ENV: DEFAULT_TRAIN_CONFIG, "gym_cards/ALFWorld-v0": "tiny_alfworld_cpu.yaml"}

SUMMARY = "PPO fine-tuning of a vision-language model on a gym_cards task (default: a CPU demo)."

TRAIN_DESCRIPTION = (
    SUMMARY
    + f" A bare `vlm-agent train` (no --config, no --model_name_or_path) runs the embedded CPU demo, "
    f"vlm_agent/configs/{DEFAULT_TRAIN_CONFIG} (tiny model, NumberLine from the image alone; its time on 2 CPU "
    "cores: benchmarks/results/demo_run.md); the defaults shown below are the paper's and apply as soon as "
    "--config or --model_name_or_path is given. `--output_dir RUN --resume` continues RUN with its config.json "
    "(Ctrl-C saves the last complete update and prints that command)."
)


def embedded_config_path(name: str) -> Path:
    """Path of a YAML file shipped in `vlm_agent/configs/`."""
    return Path(str(resources.files("vlm_agent") / "configs" / name))


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` (``--flag V`` or ``--flag=V``; the last one wins), or None."""
    value = None
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def resume_command(run_dir: Path) -> str:
    """The exact command that continues `run_dir`."""
    return f"vlm-agent train --output_dir {shlex.quote(str(run_dir))} --resume"


def _mentions(argv: list[str], flag: str) -> bool:
    return any(token == flag or token.startswith(flag + "=") for token in argv)


def train_command(argv: list[str]) -> int:
    """`vlm-agent train ARGV`; returns the exit status."""
    from vlm_agent.training.stages import StageClock

    clock = StageClock()  # the total counts from here: imports and checks included
    asks_help = bool({"-h", "--help"} & set(argv))
    demo = not (asks_help or has_config(argv) or _mentions(argv, "--model_name_or_path") or _mentions(argv, "--resume"))
    if demo:
        # The demo builds its model locally and needs nothing from the model hub: make sure that
        # nothing (a hub lookup, TRL's usage ping) tries the network. Read by huggingface_hub at
        # import, so before anything imports it (TrlParser, transformers).
        os.environ["HF_HUB_OFFLINE"] = "1"
    from vlm_agent.training.checkpoint import CheckpointError
    from vlm_agent.training.ppo_config import VLMPPOConfig

    comma = VLMPPOConfig.COMMA_SEPARATED
    given = {} if asks_help else given_options(VLMPPOConfig, "train", argv, comma, TRAIN_DESCRIPTION)
    from vlm_agent.rollout.environments import check_env, validate_env_id

    try:
        if given.get("resume"):
            from vlm_agent.training.run_config import resume_config

            if "output_dir" not in given:
                return fail("train", "--resume needs --output_dir RUN, the folder of the run to continue")
            config = resume_config(given["output_dir"], given)
        else:
            if demo:
                env_id = given.get("env_id", DEFAULT_TRAIN_ENV)
                validate_env_id(env_id)  # before the demo announces anything
                embedded = ENV_TRAIN_CONFIGS.get(env_id, TEXT_STATE_TRAIN_CONFIG)
                if embedded == TEXT_STATE_TRAIN_CONFIG:
                    print(f"vlm-agent train: the embedded demo on {env_id} gives the tiny model the state as text "
                          f"too (vlm_agent/configs/{embedded}): its image alignment reads only {DEFAULT_TRAIN_ENV} "
                          "well", flush=True)
                elif embedded != DEFAULT_TRAIN_CONFIG:
                    print(f"vlm-agent train: the embedded demo on {env_id} runs vlm_agent/configs/{embedded}", flush=True)
                argv = ["--config", str(embedded_config_path(embedded)), *argv]
            config = parse(VLMPPOConfig, "train", argv, comma, TRAIN_DESCRIPTION)
        check_env(config.env_id, config.env_kwargs)  # before a model is built or a run folder is made
        if config.model_name_or_path is not None:
            from vlm_agent.models.loading import check_model_reference

            check_model_reference(config.model_name_or_path)
    except CheckpointError as error:
        return fail("train", str(error), status=1)
    except ValueError as error:
        return fail("train", str(error))
    if not config.progress_bar:
        quiet_library_progress_bars()
    where: dict[str, Path] = {}
    from vlm_agent.rollout.vllm_server import VLLMError

    try:
        return _run(config, clock, where)
    except KeyboardInterrupt as stop:
        return _interrupted(stop, clock, where.get("run_dir"))
    except VLLMError as error:
        return fail("train", f"{error}; {_last_checkpoint_line(where.get('run_dir'))}", status=1)


def _last_checkpoint_line(run_dir: Path | None) -> str:
    """Where a run that stopped on an error can continue from."""
    from vlm_agent.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir) if run_dir is not None else None
    if checkpoint is None:
        return "the run stopped before its first checkpoint"
    return f"the run stopped; its last checkpoint {checkpoint} is intact, resume with: {resume_command(run_dir)}"


def quiet_library_progress_bars() -> None:
    """No progress bars from transformers ("Loading weights") and datasets ("Map") either, for a
    command run without its own (`--no_progress_bar`)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _run(config, clock, where: dict[str, Path]) -> int:
    """Train (the demo, or PPO on the given model), compare, report; `where["run_dir"]` once known."""
    if config.output_dir:
        where["run_dir"] = Path(config.output_dir)
    if config.model_name_or_path is None:
        from vlm_agent.demo.warm_start import check_demo, train_demo

        try:
            check_demo(config)
        except ValueError as error:
            return fail("train", str(error))
        run_dir = train_demo(config, clock)
    else:
        from vlm_agent.demo.warm_start import ppo_stage_text
        from vlm_agent.training.ppo_trainer import train

        with clock.stage("PPO", ppo_stage_text(config)):
            run_dir = train(config)
    where["run_dir"] = run_dir
    env_kwargs = f" --env_kwargs '{json.dumps(config.env_kwargs)}'" if config.env_kwargs else ""
    evaluate = f"vlm-agent eval --methods local:{run_dir} --env_ids {config.env_id}{env_kwargs}"
    results = None
    if config.final_eval_episodes > 0:
        results, comparison = _compare(config, run_dir, clock)
    print(f"Run written to {run_dir}")
    print(f"  metrics:        {run_dir / 'metrics.csv'} (and metrics.jsonl)")
    print(f"  learning curve: {run_dir / 'learning_curve.png'}")
    print(f"  samples:        {run_dir / 'samples.jsonl'}")
    print(f"  policy:         {run_dir / 'policy'} (with the prompt and sampling settings it was trained with)")
    if results is not None:
        print(f"  comparison:     {comparison} (and .csv)")
    print(f"  evaluate it:    {evaluate}")
    if results is not None:
        print()
        print(f"Held-out success on {config.env_id} ({config.final_eval_episodes} episodes each):")
        print(comparison_table(results))
    from vlm_agent.training.stages import TIMINGS_JSON, machine_line

    print()
    print(clock.summary())
    print(f"Machine: {machine_line()}")
    clock.write(run_dir / TIMINGS_JSON)
    return 0


def _compare(config, run_dir: Path, clock):
    """The closing held-out comparison, and its levels drawn into the learning curve."""
    from vlm_agent.evaluation.comparison import compare_before_after
    from vlm_agent.training.learning_curve import plot_learning_curve
    from vlm_agent.training.run_logs import LEARNING_CURVE_PNG, METRICS_JSONL

    warm_start = Path(config.model_name_or_path or run_dir / "base_model")
    warm_start = warm_start if warm_start.is_dir() else None  # a hub id: nothing local to evaluate
    rows = 3 + (warm_start is not None) + (not config.show_state)
    with clock.stage("comparison", f"{config.final_eval_episodes} held-out episodes each of {rows} players"):
        results, paths = compare_before_after(
            run_dir, env_id=config.env_id, env_kwargs=config.env_kwargs, warm_start=warm_start,
            episodes=config.final_eval_episodes, blank_control=not config.show_state,
            seed=config.seed, progress=config.progress_bar,
        )
        plot_learning_curve(run_dir / METRICS_JSONL, run_dir / LEARNING_CURVE_PNG, title=config.env_id,
                            levels={result.method: (result.success_rate, result.ci95) for result in results})
    return results, paths["md"]


def comparison_table(results) -> str:
    """Fixed-width text table of the before/after comparison, for the terminal."""
    lines = [f"  {'method':<24} {'success':>8} {'95% interval':>16} {'invalid':>8}"]
    for result in results:
        low, high = result.ci95
        lines.append(f"  {result.method:<24} {100 * result.success_rate:7.1f}% "
                     f"[{100 * low:5.1f}, {100 * high:5.1f}]% {100 * result.invalid_rate:7.1f}%")
    return "\n".join(lines)


def _interrupted(stop: KeyboardInterrupt, clock, run_dir: Path | None) -> int:
    """One line for Ctrl-C / SIGTERM: what was saved, and the command that continues."""
    from vlm_agent.training.checkpoint import latest_checkpoint
    from vlm_agent.training.interrupts import Interrupted, TrainingInterrupted

    name = stop.signal_name if isinstance(stop, Interrupted) else "SIGINT"
    status = stop.exit_status if isinstance(stop, Interrupted) else 130
    if isinstance(stop, TrainingInterrupted):
        if stop.finished:
            during = f"during update {stop.completed_updates}, which was finished first"
        else:
            during = f"during update {stop.completed_updates + 1}, which was abandoned"
        saved = (f"update {stop.completed_updates} of {stop.num_updates} is saved" if stop.completed_updates
                 else "the run's start is saved")
        message = (f"stopped by {name} {during}: {saved} in {stop.checkpoint}; "
                   f"resume with: {resume_command(stop.run_dir)}")
    elif clock.current in ("alignment", "SFT"):
        message = (f"stopped by {name} during the demo's {clock.current} stage, before PPO: nothing to resume; "
                   "run the command again to start over (and delete the unfinished run folder)")
    else:
        during = f"during {clock.current}" if clock.current else "while starting"
        if run_dir is not None and latest_checkpoint(run_dir) is not None:
            message = f"stopped by {name} {during}; resume with: {resume_command(run_dir)}"
        else:
            message = f"stopped by {name} {during}; no checkpoint was written"
    print(f"vlm-agent train: {message}", file=sys.stderr, flush=True)
    return status
