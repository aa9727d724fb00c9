"""Solver for the arithmetic card games (EZPoints, Points24).

Two questions are answered here, both with exact :class:`~fractions.Fraction` arithmetic:

* :func:`is_solvable`: can the dealt numbers, each used exactly once, be combined with the allowed
  operators into the target? (the classic "24 game" search, pairwise combination with memoisation).
* :func:`complete_formula`: given the tokens already written, which full formula extends them to
  the target? This is the expert used for demonstrations and baselines.

Results are cached per multiset of numbers, so repeated deals cost a dictionary look-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from fractions import Fraction
from functools import lru_cache
from itertools import permutations

from gym_cards.core.formula import PRECEDENCE, evaluate_formula, is_number_token, numbers_in

_ATOM = 3  # precedence of a number or a parenthesised expression


def _combine(operator: str, left: Fraction, right: Fraction) -> Fraction | None:
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    return None if right == 0 else left / right


@lru_cache(maxsize=65536)
def _reachable(values: tuple[Fraction, ...], target: Fraction, operators: str) -> bool:
    if len(values) == 1:
        return values[0] == target
    for i in range(len(values)):
        for j in range(len(values)):
            if i == j or (i > j and operators.replace("-", "").replace("/", "") == operators):
                continue  # with only commutative operators each pair is tried once
            rest = [values[k] for k in range(len(values)) if k not in (i, j)]
            for operator in operators:
                result = _combine(operator, values[i], values[j])
                if result is None:
                    continue
                if _reachable(tuple(sorted([*rest, result])), target, operators):
                    return True
    return False


def is_solvable(numbers: Sequence[int], target: int, operators: str = "+-*/") -> bool:
    """Whether ``numbers`` (each used exactly once) combine to ``target`` with ``operators``.

    Parentheses are implied: any binary expression tree over the numbers counts.
    """
    ops = "".join(op for op in "+-*/" if op in operators)
    return _reachable(tuple(sorted(Fraction(n) for n in numbers)), Fraction(target), ops)


def _serialise(operator: str, left: tuple[Fraction, tuple[str, ...], int], right: tuple[Fraction, tuple[str, ...], int]):
    """Combine two (value, tokens, precedence) items with ``operator``, minimal parentheses."""
    value = _combine(operator, left[0], right[0])
    if value is None:
        return None
    prec = PRECEDENCE[operator]
    lt = ("(", *left[1], ")") if left[2] < prec else left[1]
    right_needs = right[2] < prec or (right[2] == prec and operator in "-/")
    rt = ("(", *right[1], ")") if right_needs else right[1]
    return value, (*lt, operator, *rt), prec


def _expressions(
    items: tuple[tuple[Fraction, tuple[str, ...], int], ...], operators: str
) -> Iterator[tuple[Fraction, tuple[str, ...]]]:
    """Every (value, tokens) reachable by combining ``items`` pairwise, minimal parentheses."""
    if len(items) == 1:
        yield items[0][0], items[0][1]
        return
    for i, j in permutations(range(len(items)), 2):
        rest = tuple(items[k] for k in range(len(items)) if k not in (i, j))
        for operator in operators:
            combined = _serialise(operator, items[i], items[j])
            if combined is not None:
                yield from _expressions((*rest, combined), operators)


@lru_cache(maxsize=4096)
def solutions(numbers: tuple[int, ...], target: int, operators: str = "+-*/") -> tuple[tuple[str, ...], ...]:
    """All formulas (token tuples, minimal parentheses) over ``numbers`` that equal ``target``.

    Sorted and de-duplicated, so the first one is a deterministic choice.
    """
    items = tuple((Fraction(n), (str(n),), _ATOM) for n in numbers)
    ops = "".join(op for op in "+-*/" if op in operators)
    found = {tokens for value, tokens in _expressions(items, ops) if value == target}
    return tuple(sorted(found))


@lru_cache(maxsize=65536)
def first_solution(numbers: tuple[int, ...], target: int, operators: str = "+-*/") -> tuple[str, ...] | None:
    """One formula over ``numbers`` equal to ``target`` (deterministic for a multiset), or None.

    The pairwise search is guided by the cached :func:`is_solvable` answers, so it never backtracks.
    """
    ops = "".join(op for op in "+-*/" if op in operators)
    items = [(Fraction(n), (str(n),), _ATOM) for n in sorted(numbers)]
    goal = Fraction(target)
    if not _reachable(tuple(sorted(item[0] for item in items)), goal, ops):
        return None
    while len(items) > 1:
        for i, j in permutations(range(len(items)), 2):
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            step = next(
                (
                    combined
                    for op in ops
                    if (combined := _serialise(op, items[i], items[j])) is not None
                    and _reachable(tuple(sorted([*(r[0] for r in rest), combined[0]])), goal, ops)
                ),
                None,
            )
            if step is not None:
                items = [*rest, step]
                break
    return items[0][1]


def _search_completion(
    prefix: list[str],
    remaining: Counter[int],
    target: Fraction,
    operators: str,
    allow_parentheses: bool,
    max_length: int,
    open_count: int,
    new_opens: int,
) -> list[str] | None:
    """Depth-first search for tokens that complete ``prefix`` (bounded by ``max_length``)."""
    expect_operand = not prefix or prefix[-1] in PRECEDENCE or prefix[-1] == "("
    left = sum(remaining.values())
    # Every remaining number needs one token and one operator; every open "(" one ")".
    if len(prefix) + max(0, 2 * left - (1 if expect_operand else 0)) + open_count > max_length:
        return None
    if left == 0 and not expect_operand:
        closed = prefix + [")"] * open_count
        if evaluate_formula(closed) == target:
            return closed
        return None
    if expect_operand:
        for number in sorted(remaining):
            if remaining[number] == 0:
                continue
            remaining[number] -= 1
            found = _search_completion(
                [*prefix, str(number)], remaining, target, operators, allow_parentheses,
                max_length, open_count, new_opens,
            )
            remaining[number] += 1
            if found is not None:
                return found
        if allow_parentheses and left >= 2 and new_opens < 3:
            return _search_completion(
                [*prefix, "("], remaining, target, operators, allow_parentheses,
                max_length, open_count + 1, new_opens + 1,
            )
        return None
    if allow_parentheses and open_count > 0:
        found = _search_completion(
            [*prefix, ")"], remaining, target, operators, allow_parentheses,
            max_length, open_count - 1, new_opens,
        )
        if found is not None:
            return found
    if left > 0:
        for operator in operators:
            found = _search_completion(
                [*prefix, operator], remaining, target, operators, allow_parentheses,
                max_length, open_count, new_opens,
            )
            if found is not None:
                return found
    return None


def complete_formula(
    prefix: Sequence[str],
    numbers: Sequence[int],
    target: int,
    operators: str = "+-*/",
    allow_parentheses: bool = True,
    max_length: int = 20,
) -> tuple[str, ...] | None:
    """A full formula that starts with ``prefix``, uses every number once and equals ``target``.

    ``None`` when no such formula exists within ``max_length`` tokens (an unsolvable deal, or a
    prefix that already went wrong: a number used twice, a malformed start).
    """
    prefix = list(prefix)
    if Counter(numbers_in(prefix)) - Counter(numbers):
        return None  # the prefix uses a number that was not dealt (or too often)
    if not is_solvable(numbers, target, operators):
        return None
    formula = first_solution(tuple(sorted(numbers)), target, operators)
    if formula is not None and len(formula) <= max_length and list(formula[: len(prefix)]) == prefix:
        return formula
    opened = prefix.count("(") - prefix.count(")")
    if opened < 0 or any(not (is_number_token(t) or t in PRECEDENCE or t in "()") for t in prefix):
        return None
    remaining = Counter(numbers) - Counter(numbers_in(prefix))
    found = _search_completion(
        prefix, remaining, Fraction(target), operators, allow_parentheses, max_length, opened, 0
    )
    return None if found is None else tuple(found)
