"""A run folder's ``config.json``: the run's options, with its paths relative to the folder, and
how ``vlm-agent train --output_dir RUN --resume`` rebuilds the run's config from it.

Paths inside a run are stored relative to the run folder (the demo's warm start,
``model_name_or_path: base_model``), other local paths absolute and hub ids as they are, so a run
folder that was copied or moved still resumes. A resumed run takes every option from
``config.json``; options given alongside ``--resume`` may change only what may change when a
run continues (:data:`RESUME_OVERRIDABLE`); any other option given with a different value is
refused in one line that names it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlm_agent.training.checkpoint import CheckpointError
from vlm_agent.training.ppo_config import VLMPPOConfig

CONFIG_JSON = "config.json"

#: Options a resumed run may change: how long it runs (`total_timesteps`: extend it; the cosine
#: learning-rate schedule then spans the new total from the resumed update on), how often it saves
#: and what it logs or shows. Everything else (env_id, seed, model, num_envs, num_steps, the LoRA
#: shape, the PPO and sampling settings, ...) decides what the checkpoint means and stays.
RESUME_OVERRIDABLE = (
    "total_timesteps", "save_every", "log_samples", "progress_bar", "report_to", "final_eval_episodes", "exp_name",
    "vllm_url", "vllm_python", "vllm_server_args",  # where the vLLM server is: not what the run computes
)

#: Options a resume sets itself: the run folder it continues, and the resume flag.
RESUME_OWN = ("output_dir", "resume")


class ResumeRefused(ValueError):
    """An option given with ``--resume`` would change what the run's checkpoints mean; one line says which."""


def portable_path(path: str | None, run_dir: str | Path) -> str | None:
    """``path`` as a run stores it: relative to ``run_dir`` when inside it, absolute when it is
    another local path, as given otherwise (a hub id, or None)."""
    if path is None or not Path(path).exists():
        return path
    resolved, folder = Path(path).resolve(), Path(run_dir).resolve()
    if resolved == folder or folder in resolved.parents:
        return resolved.relative_to(folder).as_posix()
    return str(resolved)


def resolve_path(path: str | None, run_dir: str | Path) -> str | None:
    """Inverse of :func:`portable_path`: a relative path that exists inside ``run_dir`` is taken
    from there; anything else (an absolute path, a hub id) is returned as it is."""
    if path is None or Path(path).is_absolute():
        return path
    inside = Path(run_dir) / path
    return str(inside) if inside.exists() else path


def same_model(first: str | None, second: str | None, run_dir: str | Path) -> bool:
    """Whether two model references name the same model (paths compared after resolving)."""
    first, second = resolve_path(first, run_dir), resolve_path(second, run_dir)
    if first is None or second is None or not (Path(first).exists() and Path(second).exists()):
        return first == second
    return os.path.samefile(first, second)


def run_record(config: VLMPPOConfig, run_dir: str | Path) -> dict[str, Any]:
    """The config as a run stores it (``config.json``, each checkpoint's ``state.json``): every
    field, ``model_name_or_path`` portable, ``output_dir`` the folder itself (``.``), ``resume`` off."""
    record = config.to_dict()
    record["model_name_or_path"] = portable_path(config.model_name_or_path, run_dir)
    record["output_dir"] = "."
    record["resume"] = False
    return record


def write_run_config(config: VLMPPOConfig, run_dir: str | Path) -> Path:
    """Write ``run_dir/config.json`` (:func:`run_record`)."""
    path = Path(run_dir) / CONFIG_JSON
    path.write_text(json.dumps(run_record(config, run_dir), indent=1) + "\n")
    return path


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The options of a run folder's ``config.json``, checked by type, with its paths resolved.

    Raises:
        CheckpointError: no readable ``config.json`` (not a run folder, or a run stopped before it
            started training), or one this version cannot use.
    """
    from vlm_agent.config_files import ConfigFileError, check_options

    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        reason = "does not exist" if not Path(run_dir).exists() else f"holds no {CONFIG_JSON}"
        raise CheckpointError(
            f"--resume was given but {run_dir} {reason}: it is not a run folder, or its run stopped before its "
            "first update; drop --resume to start a run there"
        )
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        options = check_options(saved, VLMPPOConfig, source=str(path), comma_separated=VLMPPOConfig.COMMA_SEPARATED)
    except (ValueError, ConfigFileError) as error:
        raise CheckpointError(f"{path} cannot be used to resume ({error}); start a new --output_dir") from None
    options["model_name_or_path"] = resolve_path(options.get("model_name_or_path"), run_dir)
    return options


def resume_config(run_dir: str | Path, given: Mapping[str, Any]) -> VLMPPOConfig:
    """The config of ``vlm-agent train --output_dir RUN --resume``: ``RUN/config.json``, with the
    options in ``given`` (those named on the command line or in a ``--config`` file) applied
    where :data:`RESUME_OVERRIDABLE` allows it.

    Raises:
        CheckpointError: ``config.json`` is missing or unusable.
        ResumeRefused: an option outside :data:`RESUME_OVERRIDABLE` given with another value.
        ValueError: an allowed option given a value the config refuses.
    """
    saved = read_run_config(run_dir)
    merged = {**saved, "output_dir": str(run_dir), "resume": True}
    baseline = VLMPPOConfig(**merged).to_dict()
    for name, value in given.items():
        if name in RESUME_OWN:
            continue
        if name in RESUME_OVERRIDABLE:
            merged[name] = value
            continue
        if name == "model_name_or_path":
            unchanged = same_model(value, saved.get(name), run_dir)
        else:
            unchanged = VLMPPOConfig(**{**merged, name: value}).to_dict()[name] == baseline[name]
        if not unchanged:
            raise ResumeRefused(
                f"--{name} cannot change when a run resumes ({Path(run_dir) / CONFIG_JSON} has {baseline[name]!r}, "
                f"given {value!r}); drop --{name}, or start a new --output_dir. A resume may change only "
                + ", ".join(f"--{option}" for option in RESUME_OVERRIDABLE)
            )
    return VLMPPOConfig(**merged)
