"""Hand-worked cases of each game's rules."""

from __future__ import annotations

import gymnasium as gym
import pytest

from env_helpers import formula_env

import gym_cards  # noqa: F401
from gym_cards.core.cards import Card
from gym_cards.envs.blackjack import basic_strategy, hand_total, is_natural, score




def _act(env, token: str):
    return env.step(env.action_names.index(token))


# ---- NumberLine ---------------------------------------------------------------------------------
def _number_line(target: int, current: int, max_position: int = 5):
    env = gym.make("gym_cards/NumberLine-v0", max_position=max_position).unwrapped
    env.reset(seed=0)
    env.target, env.current = target, current
    return env


def test_number_line_reaching_target_terminates_with_plus_one():
    env = _number_line(target=3, current=2)
    _, reward, terminated, truncated, info = env.step(1)
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_number_line_moving_away_costs_one_and_closer_is_free():
    env = _number_line(target=3, current=1)
    assert env.step(0)[1] == -1.0  # 1 -> 0, farther
    assert env.step(1)[1] == 0.0  # 0 -> 1, closer


def test_number_line_walls_keep_the_marker_and_cost_one():
    env = _number_line(target=3, current=0)
    _, reward, *_ = env.step(0)
    assert (env.current, reward) == (0, -1.0)
    env = _number_line(target=0, current=5)
    _, reward, *_ = env.step(1)
    assert (env.current, reward) == (5, -1.0)


def test_number_line_truncates_after_twice_max_position_steps():
    env = _number_line(target=5, current=0)
    results = [env.step(0) for _ in range(10)]
    assert [r[3] for r in results] == [False] * 9 + [True]
    assert not any(r[2] for r in results)


def test_number_line_start_never_equals_target():
    env = gym.make("gym_cards/NumberLine-v0", max_position=1)
    for seed in range(50):
        _, info = env.reset(seed=seed)
        assert info["target"] != info["current"]


def test_number_line_split_episodes_never_visit_the_other_splits_states():
    """split="train" / "eval": disjoint states, closed under every move (random play included)."""
    import numpy as np

    from gym_cards.envs.number_line import evaluation_pair

    visited = {}
    for split in ("train", "eval"):
        env = gym.make("gym_cards/NumberLine-v0", max_position=20, split=split)
        rng = np.random.default_rng(0)
        states = set()
        for seed in range(400):
            _, info = env.reset(seed=seed)
            done = False
            while not done:
                states.add((info["current"], info["target"]))
                _, _, terminated, truncated, info = env.step(int(rng.integers(2)))
                done = terminated or truncated
        visited[split] = states
        assert all(evaluation_pair(*state) == (split == "eval") for state in states), split
    all_pairs = [(c, t) for t in range(21) for c in range(21) if c != t]
    assert sum(evaluation_pair(*pair) for pair in all_pairs) == 88  # of 420
    assert len(visited["eval"]) == 88 and visited["train"].isdisjoint(visited["eval"])
    # Every target and every current value is seen in training, only not in the held-out pairs.
    assert {t for _, t in visited["train"]} == set(range(21)) == {c for c, _ in visited["train"]}


def test_number_line_without_split_deals_as_before_and_refuses_unknown_splits():
    env = gym.make("gym_cards/NumberLine-v0")
    assert [env.reset(seed=s)[1]["target"] for s in range(6)] == [5, 2, 5, 4, 4, 4]  # the deals before split existed
    with pytest.raises(ValueError, match="split must be"):
        gym.make("gym_cards/NumberLine-v0", split="test")


# ---- EZPoints -----------------------------------------------------------------------------------
def test_ez_points_sum_to_twelve_wins_ten():
    env = formula_env("gym_cards/EZPoints-v0", [5, 7])
    for token in ["5", "+", "7"]:
        assert _act(env, token)[1] == 0.0
    _, reward, terminated, truncated, info = _act(env, "=")
    assert (reward, terminated, truncated, info["success"]) == (10.0, True, False, True)


def test_ez_points_number_not_on_table_costs_one_and_leaves_a_blank():
    env = formula_env("gym_cards/EZPoints-v0", [3, 4])
    _, reward, terminated, truncated, info = _act(env, "9")
    # Nothing is written, but the blank takes a place: the length limit counts it.
    assert (reward, terminated, truncated, info["formula"], info["formula_length"]) == (-1.0, False, False, [], 1)


def test_ez_points_reusing_a_card_costs_one():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    _act(env, "6")
    _act(env, "*")
    _, reward, _, _, info = _act(env, "6")
    assert reward == -1.0 and info["formula"] == ["6", "*"] and info["formula_length"] == 3


def test_ez_points_equals_early_loses():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    _act(env, "6")
    _, reward, terminated, _, info = _act(env, "=")
    assert (reward, terminated, info["success"]) == (-1.0, True, False)


def test_ez_points_right_value_without_every_card_loses():
    env = formula_env("gym_cards/EZPoints-v0", [10, 2])
    _act(env, "10")
    _act(env, "+")
    _act(env, "2")
    assert _act(env, "=")[1] == 10.0
    env = formula_env("gym_cards/EZPoints-v0", [6, 1], target_points=6)
    _act(env, "6")
    assert _act(env, "=")[1] == -1.0  # equals the target, but the 1 is unused


def test_ez_points_numbers_are_never_concatenated():
    env = formula_env("gym_cards/EZPoints-v0", [1, 2])
    _act(env, "1")
    _act(env, "2")  # "1 2" is malformed, not twelve
    assert _act(env, "=")[1] == -1.0


def test_ez_points_formula_too_long_ends_the_episode_one_step_later():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    for token in ["6", "+", "+", "+", "+", "+"]:  # the 6th token is still written, as published
        assert _act(env, token)[1:4] == (0.0, False, False)
    _, reward, terminated, truncated, info = _act(env, "*")  # the limit is checked before acting
    assert (reward, terminated, truncated, info["formula_length"]) == (-1.0, False, True, 6)


def test_ez_points_deals_are_always_solvable():
    env = gym.make("gym_cards/EZPoints-v0")
    for seed in range(200):
        _, info = env.reset(seed=seed)
        a, b = info["numbers"]
        assert a + b == 12 or a * b == 12


# ---- Points24 -----------------------------------------------------------------------------------
def test_points24_exact_rational_arithmetic():
    env = formula_env("gym_cards/Points24-v0", [8, 3, 8, 3])
    for token in "8 / ( 3 - 8 / 3 )".split():
        assert _act(env, token)[1] == 0.0
    _, reward, terminated, _, info = _act(env, "=")
    assert (reward, terminated, info["success"]) == (10.0, True, True)


def test_points24_every_card_must_be_used_exactly_once():
    env = formula_env("gym_cards/Points24-v0", [6, 4, 1, 1])
    for token in "6 * 4".split():
        _act(env, token)
    assert _act(env, "=")[1] == -1.0  # 24, but two cards unused


@pytest.mark.parametrize(
    "tokens",
    [
        "( 6 * 4 * 1 * 1".split(),  # unclosed parenthesis
        "6 * 4 * 1 * 1 )".split(),  # stray closing parenthesis
        "6 / ( 1 - 1 ) * 4".split(),  # division by zero
        "6 * 4 * 1 *".split(),  # dangling operator
    ],
)
def test_points24_malformed_formulas_are_ordinary_wrong_answers(tokens):
    env = formula_env("gym_cards/Points24-v0", [6, 4, 1, 1])
    for token in tokens:
        _act(env, token)
    _, reward, terminated, _, info = _act(env, "=")
    assert (reward, terminated, info["success"]) == (-1.0, True, False)


def test_points24_formula_longer_than_twenty_tokens_truncates_the_next_step():
    env = formula_env("gym_cards/Points24-v0", [6, 4, 1, 1])
    for _ in range(21):
        assert not any(_act(env, "(")[2:4])
    _, reward, terminated, truncated, info = _act(env, "=")  # even "=" is cut off now
    assert (reward, terminated, truncated, len(info["formula"])) == (-1.0, False, True, 21)


def test_points24_face_cards_keep_their_number_when_asked():
    env = gym.make("gym_cards/Points24-v0", treat_face_cards_as_10=False)
    assert env.action_space.n == 20
    assert env.unwrapped.action_names[10:13] == ("11", "12", "13")
    env = gym.make("gym_cards/Points24-v0")
    assert env.action_space.n == 17


def test_points24_reports_solvability_and_can_deal_only_solvable_hands():
    env = gym.make("gym_cards/Points24-v0")
    flags = [env.reset(seed=seed)[1]["solvable"] for seed in range(100)]
    assert any(flags) and not all(flags)  # random deals: some have no solution
    env = gym.make("gym_cards/Points24-v0", solvable_only=True)
    assert all(env.reset(seed=seed)[1]["solvable"] for seed in range(100))


# ---- Blackjack ----------------------------------------------------------------------------------
def _hand(*ranks: str) -> list[Card]:
    return [Card(rank, "spades") for rank in ranks]


def _blackjack(player: list[Card], dealer: list[Card], **kwargs):
    env = gym.make("gym_cards/Blackjack-v0", **kwargs).unwrapped
    env.reset(seed=0)
    env.player, env.dealer = player, dealer
    return env


def test_blackjack_hand_arithmetic():
    assert hand_total(_hand("A", "6")) == (17, True)
    assert hand_total(_hand("A", "6", "K")) == (17, False)
    assert hand_total(_hand("A", "A", "9")) == (21, True)
    assert score(_hand("K", "Q", "5")) == 0
    assert is_natural(_hand("A", "J")) and not is_natural(_hand("A", "5", "5"))


def test_blackjack_bust_on_hit_loses():
    env = _blackjack(_hand("K", "Q"), _hand("9", "7"))
    env.np_random = __import__("numpy").random.default_rng(0)
    while True:
        _, reward, terminated, _, info = env.step(1)
        if terminated:
            break
    assert reward == -1.0 and info["player_sum"] > 21 and not info["success"]


def test_blackjack_stand_compares_with_the_dealer():
    env = _blackjack(_hand("K", "Q"), _hand("10", "7"))  # dealer stands on 17
    _, reward, terminated, _, info = env.step(0)
    assert (reward, terminated, info["success"]) == (1.0, True, True)
    env = _blackjack(_hand("K", "7"), _hand("10", "7"))
    assert env.step(0)[1] == 0.0  # draw


@pytest.mark.parametrize(
    "natural, sab, expected",
    [(False, False, 1.0), (True, False, 1.5), (False, True, 1.0), (True, True, 1.0)],
)
def test_blackjack_natural_payouts(natural, sab, expected):
    env = _blackjack(_hand("A", "K"), _hand("10", "7"), natural=natural, sab=sab)
    assert env.step(0)[1] == expected


def test_blackjack_sab_natural_wins_even_against_a_dealer_twenty_one():
    env = _blackjack(_hand("A", "K"), _hand("10", "5", "6"), sab=True)
    assert env.step(0)[1] == 1.0
    env = _blackjack(_hand("A", "K"), _hand("10", "5", "6"), sab=False)
    assert env.step(0)[1] == 0.0  # 21 against 21 is a draw without sab


def test_blackjack_symbolic_observation():
    env = gym.make("gym_cards/Blackjack-v0", is_pixel=False)
    obs, info = env.reset(seed=0)
    assert obs[0] == info["player_sum"] and obs[2] == int(info["usable_ace"])
    assert env.observation_space.contains(obs)


def test_blackjack_reveals_the_dealer_hand_when_it_ends():
    env = _blackjack(_hand("K", "Q"), _hand("10", "7"), render_mode="rgb_array")
    env._draw()
    before = env.render()
    env.step(0)
    after = env.render()
    assert not (before[40:130] == after[40:130]).all()  # the hidden card turned over
    assert "face down" not in env.describe()


def test_basic_strategy_table():
    assert basic_strategy(16, 10, soft=False) == 1
    assert basic_strategy(16, 6, soft=False) == 0
    assert basic_strategy(12, 3, soft=False) == 1
    assert basic_strategy(12, 4, soft=False) == 0
    assert basic_strategy(18, 9, soft=True) == 1
    assert basic_strategy(18, 7, soft=True) == 0
    assert basic_strategy(11, 1, soft=False) == 1
    assert basic_strategy(17, 1, soft=False) == 0


def test_number_line_image_is_text_only_unless_the_line_is_asked_for():
    plain = gym.make("gym_cards/NumberLine-v0").reset(seed=1)[0]
    drawn = gym.make("gym_cards/NumberLine-v0", show_number_line=True).reset(seed=1)[0]
    assert not (plain == drawn).all()
    # The published image is two lines of dark text on a light background: no coloured marker.
    assert (plain.max(axis=2).astype(int) - plain.min(axis=2)).max() < 40
    assert (drawn.max(axis=2).astype(int) - drawn.min(axis=2)).max() > 100
