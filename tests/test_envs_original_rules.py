"""EZPoints and Points24 follow the original RL4VLM rules step for step.

The original rules, as the paper's code plays them (docs: /work/shared/REFERENCE.md, issue 11):

* a number not on the table, or already used, costs -1 and appends an *empty string* to the
  formula, so the formula's length grows ("to make sure the formula length increases");
* before acting, each step checks the length: once the formula holds more than 5 (EZPoints) /
  20 (Points24) entries, the step is truncated with -1 and does nothing else;
* "=" evaluates ``"".join(formula)`` with Python's ``eval``: +10 when it equals the target and
  every card was used, else -1;
* EZPoints deals the first card's rank uniformly from 2..K (faces count 10), its partner is
  ``12 // x`` or ``12 - x`` with probability 1/2 each when x is 2, 3, 4 or 6, else ``12 - x``,
  and the two are shuffled.

The numbers below are derived by hand from those sentences. ``PublishedRules`` is a reference
model written from the same sentences (not from the original's code); the comparison test plays
the env and the model side by side on the same deals and token sequences. The model's "=" uses
Python's arithmetic (through ``ast``, never ``eval``), so it can tell the steps where only the
original's ``eval`` makes the difference (concatenation, ``**``, ``//``, float division, unary
signs: our documented fixes) from real rule differences, of which there must be none.
"""

from __future__ import annotations

import ast
import copy
import warnings
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest

from env_helpers import formula_env

import gym_cards  # noqa: F401
from gym_cards.core.cards import Card, card_value
from gym_cards.core.formula import evaluate_formula, is_number_token
from gym_cards.envs import ez_points


# ---------------------------------------------------------------------------- hand-derived numbers


def _play(env, tokens: str) -> list[tuple[float, bool, bool]]:
    results = []
    for token in tokens.split():
        _, reward, terminated, truncated, _ = env.step(env.action_names.index(token))
        results.append((reward, terminated, truncated))
    return results


def test_issue_example_five_five_five_six_times_two_is_truncated_not_won():
    # Deal (6, 2). Three unavailable 5s: -1 each and three blanks (length 3); "6 * 2" brings the
    # length to 6 with reward 0; "=" then finds 6 > 5 entries: truncated, -1. Total -4 (it was +7).
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    results = _play(env, "5 5 5 6 * 2 =")
    assert [r[0] for r in results] == [-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, -1.0]
    assert results[-1] == (-1.0, False, True) and not any(r[1] or r[2] for r in results[:-1])
    assert sum(r[0] for r in results) == -4.0


def test_only_unavailable_numbers_end_the_episode_at_step_seven():
    # Six blanks make the length 6 > 5, so step 7 is truncated: 7 x -1, not 300 steps.
    env = gym.make("gym_cards/EZPoints-v0")
    _, info = env.reset(seed=0)
    missing = next(n for n in range(1, 11) if n not in info["numbers"])
    results = _play(env.unwrapped, " ".join([str(missing)] * 7))
    assert results == [(-1.0, False, False)] * 6 + [(-1.0, False, True)]


def test_a_blank_is_invisible_to_equals_but_uses_up_the_length():
    # "6 9 * 2 =" on (6, 2): the 9 costs -1 and a place, "6 * 2" is still 12 -> +10 (length 4).
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    assert [r[0] for r in _play(env, "6 9 * 2 =")] == [0.0, -1.0, 0.0, 0.0, 10.0]
    # Two blanks: length exactly 5, "=" is still judged.
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    assert _play(env, "9 9 6 * 2 =")[-1] == (10.0, True, False)
    # Three blanks: length 6, "=" is truncated.
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    assert _play(env, "9 9 9 6 * 2 =")[-1] == (-1.0, False, True)


def test_the_blank_is_not_drawn_and_not_listed():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2], render_mode="rgb_array")
    before = env.render()
    _, _, _, _, info = env.step(env.action_names.index("9"))
    assert np.array_equal(env.render(), before)  # nothing written, nothing drawn
    assert (info["formula"], info["formula_length"]) == ([], 1)
    assert "1 blank" in env.describe() and "Formula length 1" in env.describe()


def test_points24_limit_step_is_the_twenty_second():
    # 21 entries are allowed to be written; the 22nd step sees 21 > 20 and is truncated.
    env = formula_env("gym_cards/Points24-v0", [6, 4, 1, 1])
    results = _play(env, " ".join(["("] * 10 + ["7"] * 11 + ["6"]))  # 10 "(" and 11 blanks
    assert [r[0] for r in results] == [0.0] * 10 + [-1.0] * 11 + [-1.0]
    assert results[-1] == (-1.0, False, True) and not any(r[2] for r in results[:-1])
    assert env.formula == ["("] * 10  # the truncated step did not write its 6


def test_expert_keeps_within_the_limit_after_blanks():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    _play(env, "9 9")  # two blanks: three places left, exactly "6 * 2" / "2 * 6"
    for _ in range(3):
        env.step(env.expert_action())
    _, reward, terminated, _, info = env.step(env.expert_action())
    assert (reward, terminated, info["success"]) == (10.0, True, True)


def test_expert_says_equals_when_no_completion_fits_any_more():
    env = formula_env("gym_cards/EZPoints-v0", [6, 2])
    _play(env, "9 9 9")  # three blanks: "6 * 2" would need length 6
    assert env.action_names[env.expert_action()] == "="


# ---------------------------------------------------------------------------- the EZPoints deal
class EnumeratingRandom:
    """Walks every outcome of a function's ``integers(n)`` draws, each with weight 1/n.

    ``run(f)`` calls ``f(self)`` once per path of the draw tree and returns the exact
    distribution of its results; only ``integers(n)`` with a plain int ``n`` is provided, so a
    function drawing any other way fails loudly here.
    """

    def __init__(self) -> None:
        self._path: list[int] = []
        self._sizes: list[int] = []
        self._depth = 0

    def integers(self, n: int) -> int:
        assert isinstance(n, int) and n > 0
        if self._depth == len(self._path):
            self._path.append(0)
            self._sizes.append(n)
        choice = self._path[self._depth]
        self._depth += 1
        return choice

    def run(self, function) -> dict:
        distribution: Counter = Counter()
        while True:
            self._depth = 0
            result = function(self)
            del self._path[self._depth :], self._sizes[self._depth :]
            weight = Fraction(1)
            for size in self._sizes:
                weight /= size
            distribution[result] += weight
            while self._path and self._path[-1] + 1 == self._sizes[-1]:
                self._path.pop()
                self._sizes.pop()
            if not self._path:
                return dict(distribution)
            self._path[-1] += 1


def _pair_values(cards: list[Card]) -> tuple[int, int]:
    return tuple(sorted(card_value(card.rank) for card in cards))


def test_ez_points_deal_distribution_is_the_originals_exactly():
    # Hand-derived: P(first = x) = 1/12 for x in 2..9 and 4/12 for 10; the partner is 12 // x or
    # 12 - x with 1/2 each for x in {2, 3, 4, 6}. So
    #   {2, 10}: x=2 -> 10 (1/12 * 1/2) + x=10 -> 2 (4/12)     = 1/24 + 8/24 = 9/24 = 3/8
    #   {2, 6}:  x=2 -> 6 (1/24) + x=6 -> 2 (1/24)              = 1/12
    #   {6, 6}:  x=6 -> 6 (1/24)                                = 1/24
    #   {3, 4}:  x=3 -> 4 (1/24) + x=4 -> 3 (1/24)              = 1/12
    #   {3, 9}:  x=3 -> 9 (1/24) + x=9 -> 3 (1/12)              = 1/8
    #   {4, 8}:  x=4 -> 8 (1/24) + x=8 -> 4 (1/12)              = 1/8
    #   {5, 7}:  x=5 -> 7 (1/12) + x=7 -> 5 (1/12)              = 1/6
    expected = {
        (2, 10): Fraction(3, 8), (2, 6): Fraction(1, 12), (6, 6): Fraction(1, 24), (3, 4): Fraction(1, 12),
        (3, 9): Fraction(1, 8), (4, 8): Fraction(1, 8), (5, 7): Fraction(1, 6),
    }
    assert sum(expected.values()) == 1
    pairs = EnumeratingRandom().run(lambda rng: _pair_values(ez_points.deal_pair(rng, 12)))
    assert pairs == expected
    # 1/6 of the deals can only be solved with "*" ({2, 6} and {3, 4}); it was 23%.
    assert sum(p for (a, b), p in pairs.items() if a + b != 12) == Fraction(1, 6)


def test_ez_points_deal_ranks_order_and_suits():
    ordered = EnumeratingRandom().run(lambda rng: tuple(card_value(card.rank) for card in ez_points.deal_pair(rng, 12)))
    assert ordered[(2, 10)] == ordered[(10, 2)] == Fraction(3, 16)  # shown in either order, 1/2 each
    assert ordered[(6, 6)] == Fraction(1, 24)
    assert ez_points.first_card_ranks(12) == ("2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
    suits = EnumeratingRandom().run(lambda rng: ez_points.deal_pair(rng, 12)[0].suit)
    assert set(suits.values()) == {Fraction(1, 4)}
    kings = EnumeratingRandom().run(lambda rng: sum(card.rank == "K" for card in ez_points.deal_pair(rng, 12)))
    # A K is a first card with 1/12, or the partner worth 10 of a 2 (1/24), a K among 10/J/Q/K (1/4).
    assert kings[1] == Fraction(1, 12) + Fraction(1, 24) * Fraction(1, 4)


def test_ez_points_env_deals_with_the_seeded_generator_in_those_proportions():
    env = gym.make("gym_cards/EZPoints-v0")
    counts = Counter(tuple(sorted(env.reset(seed=seed)[1]["numbers"])) for seed in range(3000))
    assert abs(counts[(2, 10)] / 3000 - 3 / 8) < 0.03  # 3 standard errors is about 0.027
    assert abs((counts[(2, 6)] + counts[(3, 4)]) / 3000 - 1 / 6) < 0.025
    assert set(counts) <= {(2, 10), (2, 6), (6, 6), (3, 4), (3, 9), (4, 8), (5, 7)}


def test_other_targets_keep_the_rule_that_every_deal_is_solvable():
    pairs = EnumeratingRandom().run(lambda rng: _pair_values(ez_points.deal_pair(rng, 6)))
    assert all(a + b == 6 or a * b == 6 for a, b in pairs) and sum(pairs.values()) == 1
    # For 6, the first rank is A..5 or 6 (1 + 5, 1 * 6, 2 + 4, 2 * 3, ...): faces would need 0 or -4.
    assert ez_points.first_card_ranks(6) == ("A", "2", "3", "4", "5", "6")


# ---------------------------------------------------------------------------- step-for-step model
class _NotPythonArithmetic(Exception):
    pass


def _python_value(text: str):
    """What Python's arithmetic makes of ``text`` (ints, true division as float, ``**``, ``//``,
    unary signs, no names or calls), computed from its syntax tree: the original's ``eval`` on
    these texts, without running anything."""

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = value(node.operand)
            return operand if isinstance(node.op, ast.UAdd) else -operand
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return left / right
            if isinstance(node.op, ast.FloorDiv):
                return left // right
            if isinstance(node.op, ast.Pow):
                if abs(right) > 64 or abs(left) > 10**6:
                    raise _NotPythonArithmetic  # astronomically large: never the target
                return left**right
        raise _NotPythonArithmetic  # a call "(6)(2)", a tuple "()", ...: eval fails or is no number

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "6 (2)" compiles with a SyntaxWarning
            tree = ast.parse(text, mode="eval")
        return value(tree.body)
    except (SyntaxError, ZeroDivisionError, OverflowError, _NotPythonArithmetic):
        return None


@dataclass
class PublishedRules:
    """The original's rules (module docstring) as a reference model."""

    numbers: list[int]
    target: int
    limit: int
    formula: list[str] = field(default_factory=list)  # "" for an unavailable number
    remaining: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = list(self.numbers)

    def step(self, token: str) -> tuple[float, bool, bool]:
        if len(self.formula) > self.limit:
            return -1.0, False, True
        if token == "=":
            won = not self.remaining and _python_value("".join(self.formula)) == self.target
            return (10.0 if won else -1.0), True, False
        if is_number_token(token):
            if int(token) in self.remaining:
                self.remaining.remove(int(token))
                self.formula.append(token)
                return 0.0, False, False
            self.formula.append("")
            return -1.0, False, False
        self.formula.append(token)
        return 0.0, False, False

    def eval_is_the_difference(self) -> bool:
        """Whether Python's eval and exact token arithmetic disagree on "equals the target" here."""
        written = [token for token in self.formula if token]
        exact = evaluate_formula(written) == self.target
        return exact != (_python_value("".join(self.formula)) == self.target)


def _documented_eval_difference(tokens: list[str]) -> bool:
    """Concatenation, ``**``, ``//``, unary sign or a division: the fixes the docs list."""
    for before, after in zip(["("] + tokens, tokens):
        if is_number_token(before) and is_number_token(after):
            return True  # concatenation
        if (before, after) in {("*", "*"), ("/", "/")}:
            return True
        if after in "+-" and not (is_number_token(before) or before == ")"):
            return True  # a unary sign
    return "/" in tokens  # float division


@dataclass
class Comparison:
    steps: int = 0
    differences: list = field(default_factory=list)
    eval_differences: int = 0
    wins: int = 0
    truncations: int = 0


def _token_sequence(env, rng: np.random.Generator) -> list[str]:
    """A sequence that reaches every rule: random tokens, or the expert's solution with random
    tokens (often unavailable numbers) slipped in."""
    names = env.action_names
    if rng.random() < 0.4:
        return [names[i] for i in rng.integers(len(names), size=30)]
    solution = []
    probe = copy.deepcopy(env)
    for _ in range(env.max_formula_length + 1):
        token = names[probe.expert_action()]
        solution.append(token)
        if token == "=":
            break
        probe.step(names.index(token))
    for _ in range(int(rng.integers(0, 4))):
        solution.insert(int(rng.integers(len(solution))), names[int(rng.integers(len(names)))])
    return solution + [names[i] for i in rng.integers(len(names), size=10)]


def compare_with_published_rules(env_id: str, episodes: int, seed: int, **kwargs) -> Comparison:
    env = gym.make(env_id, **kwargs).unwrapped
    rng = np.random.default_rng(seed)
    result = Comparison()
    for episode in range(episodes):
        _, info = env.reset(seed=seed + episode)
        model = PublishedRules(list(info["numbers"]), info["target"], env.max_formula_length)
        for token in _token_sequence(env, rng):
            _, reward, terminated, truncated, _ = env.step(env.action_names.index(token))
            expected = model.step(token)
            result.steps += 1
            if (reward, terminated, truncated) != expected:
                if token == "=" and model.eval_is_the_difference():
                    result.eval_differences += 1
                    assert _documented_eval_difference([t for t in model.formula if t]), model.formula
                else:
                    result.differences.append((info["numbers"], model.formula, token, (reward, terminated, truncated), expected))
            result.wins += reward == 10.0
            result.truncations += truncated
            if terminated or truncated:
                break
    return result


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("gym_cards/EZPoints-v0", {}),
        ("gym_cards/Points24-v0", {"solvable_only": True}),
        ("gym_cards/Points24-v0", {}),
    ],
)
def test_step_for_step_same_as_the_published_rules(env_id, kwargs):
    result = compare_with_published_rules(env_id, episodes=150, seed=11, **kwargs)
    assert result.differences == []
    assert result.steps > 600 and result.truncations > 5  # the comparison reached the length limit
    if kwargs.get("solvable_only", True):
        assert result.wins > 20  # and the winning "="


def test_the_model_itself_tells_the_documented_eval_differences_apart():
    # Without our fixes the original's eval would say "12" for "1 2", 36 for "6 * * 2" and
    # 23.999999999999996 for 8 / (3 - 8 / 3); the model sees them as eval differences, not rules.
    for numbers, target, tokens in [
        ([1, 2], 12, "1 2"), ([6, 2], 36, "6 * * 2"), ([8, 3, 8, 3], 24, "8 / ( 3 - 8 / 3 )"), ([6, 2], 12, "+ 6 * 2"),
    ]:
        model = PublishedRules(numbers, target, 20)
        for token in tokens.split():
            model.step(token)
        assert model.eval_is_the_difference() and _documented_eval_difference(tokens.split())
