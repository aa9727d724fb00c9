"""gym_cards: visual card-game environments for vision-language agents (after RL4VLM).

Importing the package registers the environments with Gymnasium::

    import gymnasium as gym
    import gym_cards

    env = gym.make("gym_cards/Points24-v0")

Only gymnasium, numpy and pillow are needed; torch, transformers, pygame and alfworld are never
imported here.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0.dev0"

MAX_EPISODE_STEPS = 300
ALFWORLD_MAX_EPISODE_STEPS = 50  # the shipped games are checked solvable within 50 steps

CARD_ENV_IDS = (
    "gym_cards/NumberLine-v0",
    "gym_cards/EZPoints-v0",
    "gym_cards/Points24-v0",
    "gym_cards/Blackjack-v0",
)
ALFWORLD_ENV_ID = "gym_cards/ALFWorld-v0"
ENV_IDS = (*CARD_ENV_IDS, ALFWORLD_ENV_ID)

_ENTRY_POINTS = {
    "gym_cards/NumberLine-v0": "gym_cards.envs.number_line:NumberLineEnv",
    "gym_cards/EZPoints-v0": "gym_cards.envs.ez_points:EZPointsEnv",
    "gym_cards/Points24-v0": "gym_cards.envs.points24:Points24Env",
    "gym_cards/Blackjack-v0": "gym_cards.envs.blackjack:BlackjackEnv",
    ALFWORLD_ENV_ID: "gym_cards.alfworld.env:ALFWorldEnv",
}


def _register_all() -> None:
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in registry:
            steps = ALFWORLD_MAX_EPISODE_STEPS if env_id == ALFWORLD_ENV_ID else MAX_EPISODE_STEPS
            register(id=env_id, entry_point=entry_point, max_episode_steps=steps)


_register_all()

__all__ = ["ALFWORLD_ENV_ID", "ALFWORLD_MAX_EPISODE_STEPS", "CARD_ENV_IDS", "ENV_IDS", "MAX_EPISODE_STEPS", "__version__"]
