"""Every registered card env: Gymnasium's checker, determinism, pickling, rendering, errors."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import gym_cards

ENV_IDS = gym_cards.CARD_ENV_IDS


@pytest.fixture(autouse=True)
def _no_display(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_without_warnings(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episodes_and_pixels(env_id):
    envs = [gym.make(env_id, render_mode="rgb_array") for _ in range(2)]
    actions = np.random.default_rng(0).integers(0, envs[0].action_space.n, size=200)
    results = [[], []]
    for k, env in enumerate(envs):
        obs, info = env.reset(seed=123)
        results[k].append((obs, info, env.render()))
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(int(action))
            results[k].append((obs, reward, terminated, truncated, info, env.render()))
            if terminated or truncated:
                obs, info = env.reset()
                results[k].append((obs, info, env.render()))
    assert len(results[0]) == len(results[1])
    for first, second in zip(*results):
        assert all(_same(a, b) for a, b in zip(first, second))
    # The rendered frame is the observation.
    assert all(np.array_equal(step[0], step[-1]) for step in results[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_different_seeds_give_different_episodes(env_id):
    env = gym.make(env_id)
    observations = {env.reset(seed=seed)[0].tobytes() for seed in range(20)}
    assert len(observations) > 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_round_trip_continues_identically(env_id):
    env = gym.make(env_id)
    env.reset(seed=7)
    if any(env.step(1)[2:4]):
        env.reset()
    clone = pickle.loads(pickle.dumps(env))
    for action in [1, 0, 1, 1, 0]:
        a = env.step(action)
        b = clone.step(action)
        assert all(_same(x, y) for x, y in zip(a, b))
        if a[2] or a[3]:
            assert _same(env.reset()[0], clone.reset()[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_and_render_shape_dtype(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert obs.shape == frame.shape == (300, 300, 3)
    assert obs.dtype == frame.dtype == np.uint8
    assert obs.flags.writeable and frame.flags.writeable
    obs[:] = 0  # the caller owns its copy: the env's next frame is untouched
    assert env.render().any()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_human_render_opens_a_window(env_id):
    pytest.importorskip("pygame")
    env = gym.make(env_id, render_mode="human")
    env.reset(seed=0)
    env.step(0)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad_action", [-1, 99, 1.5, "1", None, True])
def test_bad_actions_raise_clear_errors(env_id, bad_action):
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match="action"):
        env.step(bad_action)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_numpy_integer_actions_are_accepted(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(np.int64(0))
    env.reset(seed=0)
    env.step(np.array(1))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_text_protocol(env_id):
    env = gym.make(env_id)
    env.reset(seed=3)
    u = env.unwrapped
    assert u.legal_actions() == list(u.action_names)
    assert len(u.action_names) == env.action_space.n
    assert isinstance(u.describe(), str) and u.describe()
    assert 0 <= u.expert_action() < env.action_space.n


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(gym.error.Error, match="Points25"):
        gym.make("gym_cards/Points25-v0")


def test_vector_env_steps_in_lockstep():
    envs = gym.make_vec("gym_cards/Blackjack-v0", num_envs=3, vectorization_mode="sync")
    obs, infos = envs.reset(seed=[1, 2, 3])
    assert obs.shape == (3, 300, 300, 3)
    assert len(envs.call("describe")) == 3
    obs, rewards, terminated, truncated, infos = envs.step(np.array([1, 0, 1]))
    assert rewards.shape == (3,)
    envs.close()


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        ("gym_cards/NumberLine-v0", {"max_position": 0}, "max_position"),
        ("gym_cards/EZPoints-v0", {"target_points": 1000}, "target_points"),
        ("gym_cards/Points24-v0", {"target_points": -3}, "target_points"),
        ("gym_cards/NumberLine-v0", {"render_mode": "ascii"}, "render_mode"),
    ],
)
def test_bad_options_raise_clear_errors(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, **kwargs)
