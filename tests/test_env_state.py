"""Environment state as data: an episode in flight rebuilt exactly from its start and its actions."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import gym_cards  # noqa: F401
from vlm_agent.rollout.env_state import (
    EnvStateError,
    EpisodeLog,
    action_text,
    game_of,
    generator_from_state,
    observation_fingerprint,
    replay_episode,
    rng_state,
)


def play(env, log: EpisodeLog, steps: int, rng: np.random.Generator, observation):
    """Take up to `steps` random legal actions, logging them; (episode ended, last observation)."""
    for _ in range(steps):
        action = int(rng.integers(len(env.unwrapped.legal_actions())))
        log.actions.append(action)
        log.commands.append(action_text(env, action))
        observation, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return True, observation
    return False, observation


def start(env, log: EpisodeLog):
    observation, info = env.reset(seed=log.reset_seed)
    log.game = game_of(info)
    return observation


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("gym_cards/Blackjack-v0", {}),
        ("gym_cards/Points24-v0", {}),
        ("gym_cards/NumberLine-v0", {"max_position": 9}),
        ("gym_cards/ALFWorld-v0", {"image_size": 64}),
    ],
)
def test_a_second_episode_in_flight_is_replayed_exactly_in_a_fresh_env(env_id, kwargs) -> None:
    rng = np.random.default_rng(0)
    env = gym.make(env_id, **kwargs)
    first = EpisodeLog(reset_seed=3)
    play(env, first, 6, rng, start(env, first))  # a first episode, ended or abandoned
    while True:  # then an unseeded one, from the generator as it is, still running after 2 steps
        log = EpisodeLog(rng_before_reset=rng_state(env))
        ended, observation = play(env, log, 2, rng, start(env, log))
        if not ended:
            break
    saved = json.loads(json.dumps({"log": log.to_json(), "rng": rng_state(env)}))  # through JSON, as in checkpoints
    expected_text = env.unwrapped.describe()
    expected_legal = list(env.unwrapped.legal_actions())

    fresh = gym.make(env_id, **kwargs)
    replayed, _ = replay_episode(fresh, EpisodeLog.from_json(saved["log"]))
    assert fresh.unwrapped.describe() == expected_text
    assert list(fresh.unwrapped.legal_actions()) == expected_legal
    assert rng_state(fresh) == saved["rng"]
    assert observation_fingerprint(replayed, fresh) == observation_fingerprint(observation, env)
    # Both go on identically.
    for _ in range(3):
        action = int(rng.integers(len(env.unwrapped.legal_actions())))
        original, copy = env.step(action), fresh.step(action)
        assert observation_fingerprint(original[0], env) == observation_fingerprint(copy[0], fresh)
        assert original[1:4] == copy[1:4]
        if original[2] or original[3]:
            break


def test_alfworld_logs_name_the_game_and_a_changed_game_is_refused() -> None:
    env = gym.make("gym_cards/ALFWorld-v0", image_size=64)
    _, info = env.reset(seed=5)
    log = EpisodeLog(reset_seed=5, game=game_of(info))
    assert log.game.endswith("/game.tw-pddl") and log.game.count("/") == 2
    replay_episode(gym.make("gym_cards/ALFWorld-v0", image_size=64), log)
    log.game = "look_at_obj_in_light-Other-None-DeskLamp-1/trial_X/game.tw-pddl"
    with pytest.raises(EnvStateError, match="drew game"):
        replay_episode(gym.make("gym_cards/ALFWorld-v0", image_size=64), log)


def test_a_replay_that_diverges_is_refused() -> None:
    env = gym.make("gym_cards/Blackjack-v0")
    env.reset(seed=1)
    log = EpisodeLog(reset_seed=1, actions=[0], commands=["hit"])  # action 0 is "stand"
    with pytest.raises(EnvStateError, match="diverged at step 0: action 0 is 'stand' now, 'hit' when it was taken"):
        replay_episode(gym.make("gym_cards/Blackjack-v0"), log)


@pytest.mark.parametrize(
    "data",
    [
        {"reset_seed": None, "rng_before_reset": None, "actions": [], "commands": []},
        {"reset_seed": 1, "actions": []},
        {"reset_seed": 1, "rng_before_reset": None, "actions": ["x"], "commands": ["a"]},
    ],
)
def test_malformed_saved_episodes_are_refused(data) -> None:
    with pytest.raises(EnvStateError):
        EpisodeLog.from_json(data)


def test_only_numpy_bit_generators_are_restored() -> None:
    state = np.random.default_rng(4).bit_generator.state
    assert generator_from_state(state).random() == np.random.default_rng(4).random()
    with pytest.raises(EnvStateError, match="names bit generator 'os.system'"):
        generator_from_state({**state, "bit_generator": "os.system"})
