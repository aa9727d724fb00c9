"""Exact evaluation of card-game formulas.

A formula is the list of tokens an agent has appended, one per step: number tokens (``"1"`` ..
``"13"``), the operators ``+ - * /`` and parentheses. It is evaluated by a small shunting-yard
parser over those tokens with :class:`fractions.Fraction` arithmetic, so ``8 / (3 - 8 / 3)`` is
exactly 24. Nothing here ever calls ``eval``: a malformed formula (two numbers in a row, a dangling
operator, unbalanced parentheses, an unknown token) or a division by zero evaluates to ``None``,
which the environments treat as an ordinary wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

OPERATORS = ("+", "-", "*", "/")
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def is_number_token(token: str) -> bool:
    """Whether ``token`` is a positive decimal integer written without sign or leading zero."""
    return token.isascii() and token.isdigit() and not token.startswith("0")


def apply_operator(operator: str, left: Fraction, right: Fraction) -> Fraction | None:
    """``left operator right`` exactly; ``None`` for a division by zero."""
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    if right == 0:
        return None
    return left / right


def evaluate_formula(tokens: Sequence[str]) -> Fraction | None:
    """Evaluate ``tokens`` exactly; ``None`` when the formula is malformed or divides by zero.

    Grammar (usual precedence, left associative)::

        expr   := term (("+" | "-") term)*
        term   := factor (("*" | "/") factor)*
        factor := NUMBER | "(" expr ")"

    There is no unary minus and numbers are never concatenated: ``["1", "2"]`` is malformed,
    not twelve.
    """
    values: list[Fraction] = []
    pending: list[str] = []  # operators and "(" waiting for their right-hand side
    expect_operand = True

    def reduce_top() -> bool:
        operator = pending.pop()
        right = values.pop()
        left = values.pop()
        result = apply_operator(operator, left, right)
        if result is None:
            return False
        values.append(result)
        return True

    for token in tokens:
        if not isinstance(token, str):
            return None
        if expect_operand:
            if token == "(":
                pending.append(token)
            elif is_number_token(token):
                values.append(Fraction(int(token)))
                expect_operand = False
            else:
                return None
        elif token in PRECEDENCE:
            while pending and pending[-1] != "(" and PRECEDENCE[pending[-1]] >= PRECEDENCE[token]:
                if not reduce_top():
                    return None
            pending.append(token)
            expect_operand = True
        elif token == ")":
            while pending and pending[-1] != "(":
                if not reduce_top():
                    return None
            if not pending:
                return None  # ")" without its "("
            pending.pop()
        else:
            return None
    if expect_operand:
        return None  # empty formula or a dangling operator / "("
    while pending:
        if pending[-1] == "(":
            return None  # unclosed "("
        if not reduce_top():
            return None
    return values[0]


def numbers_in(tokens: Sequence[str]) -> list[int]:
    """The number tokens of a formula, as integers, in order."""
    return [int(token) for token in tokens if is_number_token(token)]
