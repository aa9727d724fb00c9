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

from gym_cards.core.formula import PRECEDENCE, apply_operator, is_number_token, numbers_in

_ATOM = 3  # precedence of a number or a parenthesised expression


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
                result = apply_operator(operator, values[i], values[j])
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
    value = apply_operator(operator, left[0], right[0])
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


# A partial formula is summarised, per open parenthesis level, by a frame
# (sum of finished terms, sign of the current term, current product or None, pending "*"/"/"),
# which is all that matters for how it can still end. Dead states are memoised per search.
_Frame = tuple[Fraction, int, "Fraction | None", "str | None"]
_EMPTY: _Frame = (Fraction(0), 1, None, None)


def _add_factor(frame: _Frame, factor: Fraction) -> _Frame | None:
    total, sign, product, pending = frame
    if product is None:
        return (total, sign, factor, None)
    if pending == "/":
        return None if factor == 0 else (total, sign, product / factor, None)
    return (total, sign, product * factor, None)


def _close(frame: _Frame) -> Fraction:
    total, sign, product, _ = frame
    return total + sign * product


def _read_prefix(prefix: Sequence[str]) -> tuple[tuple[_Frame, ...], bool] | None:
    """(frames, expecting an operand) after ``prefix``, or None when no formula starts so."""
    frames: list[_Frame] = [(Fraction(0), 1, None, None)]
    expect_operand = True
    for token in prefix:
        if expect_operand and is_number_token(token):
            frame = _add_factor(frames[-1], Fraction(int(token)))
            if frame is None:
                return None
            frames[-1], expect_operand = frame, False
        elif expect_operand and token == "(":
            frames.append((Fraction(0), 1, None, None))
        elif not expect_operand and token in ("+", "-"):
            frames[-1] = (_close(frames[-1]), 1 if token == "+" else -1, None, None)
            expect_operand = True
        elif not expect_operand and token in ("*", "/"):
            total, sign, product, _ = frames[-1]
            frames[-1], expect_operand = (total, sign, product, token), True
        elif not expect_operand and token == ")" and len(frames) > 1:
            value = _close(frames.pop())
            frame = _add_factor(frames[-1], value)
            if frame is None:
                return None
            frames[-1] = frame
        else:
            return None
    return tuple(frames), expect_operand


def _search_completion(
    frames: tuple[_Frame, ...],
    expect_operand: bool,
    remaining: tuple[int, ...],
    target: Fraction,
    operators: str,
    allow_parentheses: bool,
    budget: int,
    dead: dict,
) -> list[str] | None:
    """Tokens (at most ``budget``) that finish the formula at the target, using ``remaining``.

    ``dead`` maps a state to the largest budget it is known to fail with (less cannot succeed).
    """
    key = (frames, expect_operand, remaining)
    if dead.get(key, -1) >= budget:
        return None
    left = len(remaining)
    # Each remaining number needs a token and an operator before it; each open level a ")".
    if max(0, 2 * left - (1 if expect_operand else 0)) + len(frames) - 1 > budget:
        dead[key] = budget
        return None
    if not expect_operand:
        if left == 0:
            value = _close(frames[-1])
            closed = frames
            tokens: list[str] = []
            while len(closed) > 1:
                parent = _add_factor(closed[-2], value)
                if parent is None:
                    break
                closed = (*closed[:-2], parent)
                value = _close(parent)
                tokens.append(")")
            else:
                if value == target:
                    return tokens
            dead[key] = budget
            return None
        for operator in operators:
            if operator in ("+", "-"):
                frame = (_close(frames[-1]), 1 if operator == "+" else -1, None, None)
            else:
                frame = (*frames[-1][:3], operator)
            found = _search_completion(
                (*frames[:-1], frame), True, remaining, target, operators, allow_parentheses, budget - 1, dead
            )
            if found is not None:
                return [operator, *found]
        if allow_parentheses and len(frames) > 1:
            frame = _add_factor(frames[-2], _close(frames[-1]))
            if frame is not None:
                found = _search_completion(
                    (*frames[:-2], frame), False, remaining, target, operators, allow_parentheses, budget - 1, dead
                )
                if found is not None:
                    return [")", *found]
    else:
        for position, number in enumerate(remaining):
            if position and remaining[position - 1] == number:
                continue
            frame = _add_factor(frames[-1], Fraction(number))
            if frame is None:
                continue
            rest = remaining[:position] + remaining[position + 1 :]
            found = _search_completion(
                (*frames[:-1], frame), False, rest, target, operators, allow_parentheses, budget - 1, dead
            )
            if found is not None:
                return [str(number), *found]
        fresh = 0  # "(" levels just opened and still empty: k numbers never need more than k - 1
        while fresh < len(frames) - 1 and frames[-1 - fresh] == _EMPTY:
            fresh += 1
        if allow_parentheses and left >= 2 and fresh < left - 1:
            found = _search_completion(
                (*frames, _EMPTY), True, remaining, target, operators,
                allow_parentheses, budget - 1, dead,
            )
            if found is not None:
                return ["(", *found]
    dead[key] = budget
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
    state = _read_prefix(prefix)
    if state is None:
        return None
    remaining = tuple(sorted((Counter(numbers) - Counter(numbers_in(prefix))).elements()))
    ops = "".join(op for op in "+-*/" if op in operators)
    suffix = _search_completion(
        state[0], state[1], remaining, Fraction(target), ops, allow_parentheses, max_length - len(prefix), {}
    )
    return None if suffix is None else (*prefix, *suffix)
