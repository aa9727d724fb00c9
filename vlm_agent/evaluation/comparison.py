"""Before / after: the held-out comparison that ``vlm-agent train`` ends with (random play, the warm
start, the trained policy, optionally the trained policy shown blank frames and other episodes'
frames, the expert).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlm_agent.evaluation.eval_config import DEFAULT_NUM_ENVS, EvalConfig
from vlm_agent.evaluation.evaluate import run_eval
from vlm_agent.evaluation.results import EvalResult
from vlm_agent.evaluation.tables import env_short_name

# --------------------------------------------------------------------------------------------
# Before / after: what `vlm-agent train` reports at the end of a run
# --------------------------------------------------------------------------------------------

COMPARISON_STEM = "held_out_comparison"
"""File stem of the before/after comparison in a run folder (``.md``, ``.csv``, ``.png``, ``.json``)."""

COMPARISON_ROWS = ("random", "warm start", "trained", "expert")
"""Row names of the comparison, in order: floor, starting point, result, ceiling."""

BLANK_CONTROL_ROW = "trained (blank image)"
"""Row of the trained policy shown blank frames (``blank_control``), after ``trained``."""

OTHER_STATE_ROW = "trained (other-state image)"
"""Row of the trained policy shown other episodes' frames (``blank_control``), after the blank row."""


def compare_before_after(run_dir: str | Path, *, env_id: str, warm_start: str | Path | None, episodes: int,
                         seed: int, num_envs: int | None = None, env_kwargs: Mapping[str, Any] | None = None,
                         blank_control: bool = False, progress: bool = False) -> tuple[list[EvalResult], dict[str, Path]]:
    """Held-out success of random play, the warm start, the trained policy and the expert.

    The training curve alone cannot say whether PPO helped: it counts only the episodes that end
    during rollouts, under a policy that changes as it learns. This plays the same held-out
    episodes (:func:`held_out_seed`) with each of the four, each policy with the settings it was
    trained with (``agent_settings.json``), and writes ``held_out_comparison.{md,csv,png,json}``
    into ``run_dir`` (``vlm-agent train`` then redraws ``learning_curve.png`` with the four levels).

    Args:
        run_dir: A finished training run (holds ``policy/`` and ``metrics.jsonl``).
        env_id: The environment trained on.
        env_kwargs: Its ``gymnasium.make`` options (those of the run).
        warm_start: The model folder PPO started from (the SFT'd ``base_model`` of the demo);
            None leaves its row out (a model given by hub id).
        episodes: Held-out episodes per row.
        seed: Run seed of the held-out episodes.
        num_envs: Environments side by side (default :data:`vlm_agent.evaluation.eval_config.DEFAULT_NUM_ENVS`).
        blank_control: Add :data:`BLANK_CONTROL_ROW`, the trained policy shown blank frames (for a
            policy that sees the image alone, what it wins without reading it), and
            :data:`OTHER_STATE_ROW`, the same policy shown other episodes' frames (whether its moves
            follow what is drawn).
        progress: Show progress bars.

    Returns:
        The results in :data:`COMPARISON_ROWS` order (the control rows after ``trained``)
        and the written paths.
    """
    run_dir = Path(run_dir)
    random_name, warm_name, trained_name, expert_name = COMPARISON_ROWS
    methods = [f"{random_name}=random", f"{warm_name}=local:{warm_start}", f"{trained_name}=local:{run_dir}",
               f"{expert_name}=expert"]
    if blank_control:
        methods[3:3] = [f"{BLANK_CONTROL_ROW}=blank:local:{run_dir}", f"{OTHER_STATE_ROW}=other:local:{run_dir}"]
    config = EvalConfig(
        methods=[method for method in methods if warm_start is not None or not method.startswith(warm_name)],
        env_ids=[env_id], episodes=episodes, seed=seed, num_envs=num_envs or DEFAULT_NUM_ENVS,
        env_kwargs=dict(env_kwargs or {}), out_dir=str(run_dir), stem=COMPARISON_STEM,
        title=f"Held-out success before and after PPO ({env_short_name(env_id)})", progress=progress,
    )
    return run_eval(config)
