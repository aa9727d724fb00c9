"""The formula evaluator and the solver: hand-worked values and property-based tests."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gym_cards.core.formula import evaluate_formula
from gym_cards.core.solver import complete_formula, is_solvable, solutions

TOKENS = [str(n) for n in range(1, 14)] + ["+", "-", "*", "/", "(", ")", "=", "", "0", "x", "**"]


@pytest.mark.parametrize(
    "text, value",
    [
        ("8 / ( 3 - 8 / 3 )", Fraction(24)),
        ("1 + 2 * 3", Fraction(7)),
        ("( 1 + 2 ) * 3", Fraction(9)),
        ("10 - 4 - 3", Fraction(3)),
        ("12 / 4 / 3", Fraction(1)),
        ("( ( 7 ) )", Fraction(7)),
        ("1 / 3", Fraction(1, 3)),
        ("13 - 2 * ( 3 + 4 )", Fraction(-1)),
    ],
)
def test_known_values(text, value):
    assert evaluate_formula(text.split()) == value


@pytest.mark.parametrize(
    "text",
    ["", "1 2", "+ 1", "1 +", "( 1 + 2", "1 + 2 )", ") 1 (", "1 / 0", "1 / ( 2 - 2 )", "( )", "01", "1 ** 2", "- 1"],
)
def test_malformed_or_undefined_formulas_give_none(text):
    assert evaluate_formula(text.split()) is None


@given(st.lists(st.sampled_from(TOKENS), max_size=30))
@settings(max_examples=500, deadline=None)
def test_random_token_strings_never_raise(tokens):
    value = evaluate_formula(tokens)
    assert value is None or isinstance(value, Fraction)


@given(st.lists(st.text(max_size=4), max_size=10))
@settings(max_examples=200, deadline=None)
def test_arbitrary_strings_never_raise(tokens):
    evaluate_formula(tokens)


def _expressions():
    leaves = st.integers(1, 13).map(lambda n: ([str(n)], Fraction(n)))

    def extend(children):
        def combine(args):
            (left, lv), op, (right, rv) = args
            if op == "/" and rv == 0:
                return None
            value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
            return (["(", *left, ")", op, "(", *right, ")"], value)

        return st.tuples(children, st.sampled_from("+-*/"), children).map(combine).filter(lambda e: e is not None)

    return st.recursive(leaves, extend, max_leaves=8)


@given(_expressions())
@settings(max_examples=300, deadline=None)
def test_valid_expressions_agree_with_fraction_arithmetic(expression):
    tokens, value = expression
    assert evaluate_formula(tokens) == value


@given(st.lists(st.integers(1, 13), min_size=4, max_size=4))
@settings(max_examples=60, deadline=None)
def test_every_listed_solution_is_correct_and_uses_each_card_once(numbers):
    found = solutions(tuple(sorted(numbers)), 24)
    assert bool(found) == is_solvable(numbers, 24)
    for formula in found[:20]:
        assert evaluate_formula(formula) == 24
        assert sorted(int(t) for t in formula if t.isdigit()) == sorted(numbers)


def test_solvable_counts_match_the_known_totals():
    from itertools import combinations_with_replacement

    assert sum(is_solvable(c, 24) for c in combinations_with_replacement(range(1, 14), 4)) == 1362
    assert sum(is_solvable(c, 24) for c in combinations_with_replacement(range(1, 11), 4)) == 566


def test_completion_follows_an_unusual_prefix():
    completion = complete_formula(["(", "(", "1", "+"], [1, 2, 3, 4], 24)
    assert completion[:4] == ("(", "(", "1", "+")
    assert evaluate_formula(completion) == 24


def test_completion_is_none_for_dead_ends():
    assert complete_formula([], [1, 1, 1, 1], 24) is None
    assert complete_formula(["5"], [1, 2, 3, 4], 24) is None  # 5 was never dealt
    assert complete_formula(["3", "*"], [3, 3, 8, 8], 24) is None


@given(st.lists(st.integers(1, 10), min_size=4, max_size=4), st.data())
@settings(max_examples=40, deadline=None)
def test_completion_extends_any_prefix_of_any_solution(numbers, data):
    found = solutions(tuple(sorted(numbers)), 24)
    if not found:
        assert complete_formula([], numbers, 24) is None
        return
    formula = data.draw(st.sampled_from(found))
    cut = data.draw(st.integers(0, len(formula)))
    completion = complete_formula(list(formula[:cut]), numbers, 24)
    assert completion is not None and completion[:cut] == formula[:cut]
    assert evaluate_formula(completion) == 24
    assert sorted(int(t) for t in completion if t.isdigit()) == sorted(numbers)
