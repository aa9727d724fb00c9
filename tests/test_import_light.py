"""``import gym_cards`` (and making every card env) never imports torch, transformers or pygame."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "pygame", "trl", "peft", "alfworld", "textworld")


@pytest.mark.parametrize(
    "code",
    [
        "import gym_cards",
        "import gymnasium as gym, gym_cards\n"
        "for env_id in gym_cards.CARD_ENV_IDS:\n"
        "    env = gym.make(env_id, render_mode='rgb_array'); env.reset(seed=0); env.step(0); env.render()",
    ],
)
def test_gym_cards_stays_light(code):
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout.strip()}"
