"""alfworld's planner expert (fast-downward) on one game, run in a child process with a time-out.

The planner can take seconds to minutes per game, and fast-downward's translator overwrites
``sys.argv``; so it runs as ``python -m gym_cards.alfworld.planner GAME_FILE`` (arguments read
before anything is imported), prints its plan as one JSON line, and the parent kills it at the
time-out. The hand-coded expert (:func:`gym_cards.alfworld.engine.play_expert`) is the default
check; this one is the optional second opinion of ``gym-cards alfworld-generate --expert planner``.
"""

from __future__ import annotations

import json
import subprocess
import sys


def planner_plan(game_file: str, timeout_s: float) -> list[str] | None:
    """The planner's command sequence for a game, or None if it found none within ``timeout_s``."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gym_cards.alfworld.planner", game_file],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    lines = [line for line in result.stdout.splitlines() if line.startswith("PLAN ")]
    if not lines:
        return None
    plan = json.loads(lines[-1][len("PLAN "):])
    return plan or None


def _plan_in_this_process(game_file: str) -> list[str]:
    from gym_cards.alfworld.engine import import_alfworld

    import_alfworld()
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs import PddlEnv

    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(policy_commands=True, admissible_commands=True)), shuffle=False)
    with open(game_file) as handle:
        env.load(json.load(handle))
    return list(env.reset()["policy_commands"])


if __name__ == "__main__":
    game_path = sys.argv[1]  # read before fast-downward rewrites sys.argv
    print("PLAN " + json.dumps(_plan_in_this_process(game_path)), flush=True)
