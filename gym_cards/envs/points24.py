"""Points24: the 24 game with four cards."""

from __future__ import annotations

from typing import Any

from gym_cards.core.arguments import require_bool
from gym_cards.core.cards import Card, card_value, draw_card
from gym_cards.core.solver import is_solvable
from gym_cards.core.formula_game import FormulaCardEnv

MAX_REDEALS = 1000


class Points24Env(FormulaCardEnv):
    """
    ## Description
    Four cards are dealt; write a formula that uses every card exactly once and equals
    ``target_points`` (24), one token per step, then say "=". Deals are random, so some have no
    solution (``info["solvable"]`` says which); ``solvable_only=True`` deals only solvable hands.
    From RL4VLM (Zhai et al., NeurIPS 2024).

    ## Action Space
    With ``treat_face_cards_as_10=True`` (default) ``Discrete(17)``: 0-9 = numbers 1..10, then
    ``"+"``, ``"-"``, ``"*"``, ``"/"``, ``"("``, ``")"``, ``"="``. With False, ``Discrete(20)``:
    numbers 1..13 (J, Q, K = 11, 12, 13), then the same seven tokens.

    ## Observation Space
    ``Box(0, 255, (300, 300, 3), uint8)``: the four cards, the target and the formula so far.

    ## Starting State
    Four cards from an infinite deck (rank and suit uniform), from the env's seeded generator.

    ## Rewards
    -1 for a number that is not on the table or already used: nothing is written, but a blank
    takes its place, so it counts towards the length limit; on "=": +10 if the formula equals the
    target exactly (rational arithmetic: ``8 / (3 - 8 / 3)`` is 24) and uses every card once, else
    -1 (a malformed formula or a division by zero is an ordinary wrong answer); -1 on the step
    after the formula (blanks included) has grown past 20 tokens; 0 otherwise. The rules match the
    original env step for step (see :mod:`gym_cards.core.formula_game`), except where its
    ``eval`` is itself the difference: no number concatenation, ``**``, ``//``, float division or
    unary signs.

    ## Episode End
    Terminates on "="; truncated on the step after the formula has grown past 20 tokens (blanks
    included; the step is not carried out, as published), or by the registered
    ``max_episode_steps=300``. A ``step`` after the end raises ``RuntimeError``: call ``reset()``.

    ## Arguments
    ``target_points`` (int, default 24), ``treat_face_cards_as_10`` (bool, default True),
    ``solvable_only`` (bool, default False), ``render_mode``; flags must be real booleans.
    ``reset`` takes no options. ``info`` holds ``cards``, ``numbers``, ``formula`` (the tokens
    written; blanks are neither listed nor drawn), ``formula_length`` (tokens plus blanks: what
    the limit counts), ``target``, ``solvable`` and ``success``.

    ## Version History
    * v0: first version, rules as published; exact formula evaluation without ``eval``, seeded
      deals, optional solvable-only dealing.
    * v0, still before the first release (kept as v0 since no release had the older rules):
      rules aligned with the original step for step. An unavailable number now leaves a blank that
      counts towards the limit (before, the formula was unchanged); the limit is checked before
      acting (before, the step adding the 21st token was truncated). A step after the episode
      ended raises ``RuntimeError`` (before, "=" paid again); flags must be booleans;
      ``reset`` refuses options.
    """

    operators = ("+", "-", "*", "/", "(", ")")
    max_formula_length = 20

    def __init__(
        self,
        target_points: int = 24,
        treat_face_cards_as_10: bool = True,
        solvable_only: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(target_points, treat_face_cards_as_10, render_mode)
        self.solvable_only = require_bool("solvable_only", solvable_only)

    def _deal(self) -> list[Card]:
        for _ in range(MAX_REDEALS):
            cards = [draw_card(self.np_random) for _ in range(4)]
            values = [card_value(card.rank, self.treat_face_cards_as_10) for card in cards]
            if not self.solvable_only or is_solvable(values, self.target_points):
                return cards
        raise ValueError(
            f"solvable_only=True found no solvable deal for target_points={self.target_points} in "
            f"{MAX_REDEALS} deals; choose a target that four cards can make (24 is the classic one)"
        )

    def _info(self, success: bool = False) -> dict[str, Any]:
        info = super()._info(success)
        info["solvable"] = self.solvable
        return info
