"""The experts: optimal on NumberLine and EZPoints, on every solvable Points24 deal; Blackjack's
basic strategy beats random play and lands near its known win rate."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import gym_cards  # noqa: F401


def _run_expert(env, seed: int) -> tuple[bool, float, int]:
    _, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        total += reward
        steps += 1
        if terminated or truncated:
            return info["success"], total, steps


@pytest.mark.parametrize("max_position", [1, 5, 12])
def test_number_line_expert_always_wins_by_the_shortest_path(max_position):
    env = gym.make("gym_cards/NumberLine-v0", max_position=max_position)
    for seed in range(200):
        _, info = env.reset(seed=seed)
        distance = abs(info["target"] - info["current"])
        success, total, steps = _run_expert(env, seed)
        assert success and total == 1.0 and steps == distance


def test_ez_points_expert_always_wins():
    env = gym.make("gym_cards/EZPoints-v0")
    for seed in range(300):
        success, total, _ = _run_expert(env, seed)
        assert success and total == 10.0


def test_points24_expert_wins_every_solvable_deal():
    env = gym.make("gym_cards/Points24-v0")
    solvable = 0
    for seed in range(300):
        _, info = env.reset(seed=seed)
        success, total, _ = _run_expert(env, seed)
        assert success == info["solvable"]
        solvable += info["solvable"]
    assert solvable > 150


def test_points24_expert_with_face_cards_as_numbers():
    env = gym.make("gym_cards/Points24-v0", treat_face_cards_as_10=False, solvable_only=True)
    for seed in range(60):
        assert _run_expert(env, seed)[0]


def test_points24_expert_gives_up_at_once_when_no_solution():
    env = gym.make("gym_cards/Points24-v0")
    for seed in range(300):
        _, info = env.reset(seed=seed)
        if not info["solvable"]:
            assert env.unwrapped.action_names[env.unwrapped.expert_action()] == "="
            return
    pytest.fail("no unsolvable deal in 300 seeds")


def test_blackjack_basic_strategy_beats_random_near_its_known_win_rate():
    episodes = 4000
    env = gym.make("gym_cards/Blackjack-v0", is_pixel=False)
    expert_wins = sum(_run_expert(env, seed)[0] for seed in range(episodes)) / episodes
    rng = np.random.default_rng(0)
    random_wins = 0
    for seed in range(episodes):
        env.reset(seed=seed)
        while True:
            _, reward, terminated, _, _ = env.step(int(rng.integers(2)))
            if terminated:
                random_wins += reward > 0
                break
    random_wins /= episodes
    # Basic strategy (hit/stand only, dealer stands on 17) wins about 43% of hands.
    assert 0.40 <= expert_wins <= 0.46
    assert expert_wins > random_wins + 0.08
