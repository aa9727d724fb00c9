"""Helpers shared by the env test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import gymnasium as gym

import gym_cards  # noqa: F401  (registers the ids)
from gym_cards.core.cards import Card


def formula_env(env_id: str, numbers: list[int], **kwargs):
    """A formula game (EZPoints/Points24) reset with seed 0, then dealt exactly ``numbers`` (hearts; 1 is an ace)."""
    env = gym.make(env_id, **kwargs).unwrapped
    env.reset(seed=0)
    env.cards = [Card(str(n) if n > 1 else "A", "hearts") for n in numbers]
    env.numbers = list(numbers)
    env._solvable = None
    env._draw_table()
    return env
