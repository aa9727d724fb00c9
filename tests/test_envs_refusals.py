"""Every env refuses what it cannot do, with one clear error and without changing its state.

Hostile inputs from issue 11: steps after the episode ended, flags that are not booleans, reset
options that are not a mapping or name unknown keys, ALFWorld actions that are neither an
integer nor a command.
"""

from __future__ import annotations

import importlib.util
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest

import gym_cards

CARD_ENV_IDS = gym_cards.CARD_ENV_IDS


def _snapshot(env) -> bytes:
    """Everything the env is (its generator included), to compare before and after a refusal."""
    return pickle.dumps(env.unwrapped.__dict__ | {"np_random_state": env.unwrapped.np_random.bit_generator.state})


def _finish(env, seed: int = 0):
    """Reset and play the expert until the episode ends; returns the last step's result."""
    env.reset(seed=seed)
    u = env.unwrapped
    for _ in range(50):
        result = env.step(u.expert_action())
        if result[2] or result[3]:
            return result
    raise AssertionError("the expert did not end the episode")


# ---------------------------------------------------------------------------- after the end
@pytest.mark.parametrize("env_id", CARD_ENV_IDS)
def test_step_after_the_end_is_refused_and_changes_nothing(env_id):
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    _finish(env)
    before, frame, text = _snapshot(env), env._frame.copy(), env.describe()
    for action in (0, 1, env.action_space.n - 1):
        with pytest.raises(RuntimeError, match=r"episode has ended.*reset\(\)"):
            env.step(action)
    assert _snapshot(env) == before and np.array_equal(env._frame, frame) and env.describe() == text
    env.reset(seed=1)
    env.step(0)  # a new episode plays again


@pytest.mark.parametrize("env_id", ["gym_cards/EZPoints-v0", "gym_cards/Points24-v0"])
def test_equals_pays_once(env_id):
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    _, reward, terminated, _, info = _finish(env)
    assert terminated and reward in (10.0, -1.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_names.index("="))  # it paid +10 again on every extra "=" before


def test_step_after_truncation_is_refused_too():
    env = gym.make("gym_cards/NumberLine-v0", max_position=1, disable_env_checker=True).unwrapped
    env.reset(seed=0)
    away = 0 if env.target > env.current else 1
    _, _, terminated, truncated, _ = env.step(away)  # 2 * max_position = 2 steps, both wrong way
    _, _, terminated, truncated, _ = env.step(away)
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(1 - away)
    env = gym.make("gym_cards/EZPoints-v0", disable_env_checker=True).unwrapped
    _, info = env.reset(seed=0)
    missing = env.action_names.index(next(str(n) for n in range(1, 11) if n not in info["numbers"]))
    for _ in range(7):
        *_, truncated, _ = env.step(missing)
    assert truncated
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(missing)


@pytest.mark.parametrize("env_id", CARD_ENV_IDS)
def test_step_before_reset_is_refused(env_id):
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(0)


def test_vector_envs_still_reset_finished_episodes_on_their_own():
    envs = gym.make_vec("gym_cards/EZPoints-v0", num_envs=2, vectorization_mode="sync")
    envs.reset(seed=0)
    equals = envs.single_action_space.n - 1
    for _ in range(3):  # "=" ends every episode; the next step is the autoreset, then it plays on
        envs.step(np.array([equals, equals]))
    envs.close()


# ---------------------------------------------------------------------------- boolean flags
FLAGS = [
    ("gym_cards/NumberLine-v0", "show_number_line"),
    ("gym_cards/Points24-v0", "treat_face_cards_as_10"),
    ("gym_cards/Points24-v0", "solvable_only"),
    ("gym_cards/Blackjack-v0", "natural"),
    ("gym_cards/Blackjack-v0", "sab"),
    ("gym_cards/Blackjack-v0", "is_pixel"),
]


@pytest.mark.parametrize("env_id, flag", FLAGS)
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None, [True]])
def test_flags_must_be_booleans(env_id, flag, value):
    with pytest.raises(TypeError, match=re.escape(f"{flag} must be True or False, got {value!r}")):
        gym.make(env_id, **{flag: value})


@pytest.mark.parametrize("env_id, flag", FLAGS)
def test_numpy_booleans_are_booleans(env_id, flag):
    for value in (np.True_, np.False_):
        stored = getattr(gym.make(env_id, **{flag: value}).unwrapped, flag)
        assert type(stored) is bool and stored == bool(value)


# ---------------------------------------------------------------------------- reset options
@pytest.mark.parametrize("env_id", CARD_ENV_IDS)
def test_card_env_reset_options_are_checked(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=0, options={})  # no options: what vector envs pass after taking reset_mask out
    before = _snapshot(env)
    for bad in ("game", [0], 3):
        with pytest.raises(TypeError, match="mapping"):
            env.reset(seed=5, options=bad)
    with pytest.raises(ValueError, match=r"unknown options \['game'\]; accepted options: none"):
        env.reset(seed=5, options={"game": 1})
    assert _snapshot(env) == before


# ---------------------------------------------------------------------------- ALFWorld
@pytest.fixture(scope="module")
def alfworld():
    if importlib.util.find_spec("alfworld") is None:
        pytest.skip("needs the [alfworld] extra")
    from gym_cards.alfworld.env import ALFWorldEnv

    env = ALFWorldEnv()
    yield env
    env.close()


def _alfworld_state(env) -> tuple:
    return (env.describe(), env.legal_actions(), env._game_file, env.np_random.bit_generator.state)


def test_alfworld_step_after_the_win_is_refused(alfworld):
    alfworld.reset(seed=0, options={"game": 1})  # a six-step game for alfworld's expert
    for _ in range(50):
        _, reward, terminated, _, info = alfworld.step(alfworld.expert_action())
        if terminated:
            break
    assert terminated and info["success"] and reward == 51.0
    before = _alfworld_state(alfworld)
    for action in (0, "look", alfworld.expert_action()):
        with pytest.raises(RuntimeError, match=r"episode has ended.*reset\(\)"):
            alfworld.step(action)  # it paid 51 again with success=True before
    assert _alfworld_state(alfworld) == before


@pytest.mark.parametrize("action", [1.7, 1.0, float("inf"), True, False, np.True_, b"0", None, [0], np.float64(0)])
def test_alfworld_actions_must_be_integers_or_commands(alfworld, action):
    alfworld.reset(seed=0, options={"game": 1})
    before = _alfworld_state(alfworld)
    with pytest.raises(TypeError, match=r"int index into legal_actions\(\).*or an admissible command \(str\)"):
        alfworld.step(action)
    assert _alfworld_state(alfworld) == before


def test_alfworld_integer_kinds_are_accepted_and_far_indices_cost_one(alfworld):
    alfworld.reset(seed=0, options={"game": 1})
    look = alfworld.legal_actions().index("look")
    for action in (np.int64(look), np.uint8(look), np.array(look)):
        _, reward, _, _, info = alfworld.step(action)
        assert info["command"] == "look" and info["admissible"]
    for far in (10**30, -1, np.int64(2**62)):  # documented: an index past the list costs -1
        _, reward, terminated, _, info = alfworld.step(far)
        assert (reward, terminated, info["admissible"]) == (-1.0, False, False)


@pytest.mark.parametrize("options, error, message", [
    ("game", TypeError, "mapping"),
    ([("game", 0)], TypeError, "mapping"),
    (3, TypeError, "mapping"),
    ({"game": True}, TypeError, "int index into game_files or a game.tw-pddl path"),
    ({"game": 1.0}, TypeError, "int index into game_files"),
    ({"game": 0, "seed": 3}, ValueError, r"unknown options \['seed'\]; accepted options: 'game'"),
    ({"gmae": 0}, ValueError, "unknown options"),
    ({"game": "/no/such/game.tw-pddl"}, ValueError, "game.tw-pddl path"),
])
def test_alfworld_reset_options_are_checked(alfworld, options, error, message):
    alfworld.reset(seed=0, options={"game": 1})
    before = _alfworld_state(alfworld)
    with pytest.raises(error, match=message):
        alfworld.reset(seed=9, options=options)
    assert _alfworld_state(alfworld) == before  # a refused reset did not start another game


def test_alfworld_reset_accepts_no_or_empty_options(alfworld):
    for options in (None, {}, {"game": None}, {"game": np.int64(1)}):
        alfworld.reset(seed=0, options=options)
