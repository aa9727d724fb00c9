"""The game shared by EZPoints and Points24: write a formula over the dealt cards, one token a step.

The rules follow the original RL4VLM environments step for step:

* a number that is not on the table (or already used as often as it was dealt) costs -1 and
  still takes a place in the formula: the original appends an empty string for it, on purpose,
  so that the formula's length grows and an agent that keeps naming unavailable numbers reaches
  the length limit. Here that place is a *blank*: counted in ``formula_length`` (and
  ``info["formula_length"]``) but neither drawn nor listed in ``formula`` / ``info["formula"]``,
  and skipped when the formula is evaluated on "=" (the original's ``"".join`` drops the empty
  strings before ``eval`` sees the text). So ``6 9 * 2 =`` on the deal (6, 2) costs -1 for the 9
  and still wins +10, within the limit. The picture stays the original's (a blank adds no
  character to the written formula) and ``info["formula"]`` stays a list of real tokens that
  prompts can join; ``describe()`` names the blanks and the length, so a text agent can see how
  much of the limit is left;
* the length limit is checked *before* acting: once the formula (blanks included) holds more
  than ``max_formula_length`` tokens, the next step, whatever its action, is truncated with -1
  and changes nothing;
* "=" ends the episode: +10 if the formula equals the target and uses every card once, else -1.

Where the original's ``eval`` is itself the difference we keep our exact evaluator
(:mod:`gym_cards.core.formula`): numbers are never concatenated (``1 2`` is not twelve), there is
no ``**`` or ``//`` and no unary sign, and division is exact (``8 / (3 - 8 / 3)`` is 24).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from gym_cards.core.arguments import require_bool
from gym_cards.core.cards import Card, card_value
from gym_cards.core.formula import evaluate_formula, is_number_token, numbers_in
from gym_cards.core.rendering import (
    FRAME_SIZE,
    GOLD,
    blank_frame,
    card_sprite,
    paste,
    row_positions,
    text_sprite,
)
from gym_cards.core.solver import complete_formula, is_solvable
from gym_cards.core.visual_env import VisualEnv

INVALID_REWARD = -1.0
WIN_REWARD = 10.0
TOKEN_SIZE = 22
LINE_HEIGHT = 30


def formula_outcome(formula: list[str], numbers: list[int], target: int) -> bool:
    """Whether ``formula`` equals ``target`` and uses every dealt number exactly once."""
    return Counter(numbers_in(formula)) == Counter(numbers) and evaluate_formula(formula) == target


def number_available(number: int, formula: list[str], numbers: list[int]) -> bool:
    """Whether ``number`` is on the table and not yet used as often as it was dealt."""
    return numbers_in(formula).count(number) < numbers.count(number)


@lru_cache(maxsize=16)
def table_background(target: int, label_y: int) -> np.ndarray:
    """The felt with the "Target" and "Formula:" labels (read-only; cards are pasted on a copy).

    Cached because it is the same for every deal, and resets are frequent: an episode of these
    games is a handful of steps.
    """
    frame = blank_frame()
    paste(frame, text_sprite(f"Target: {target}", 20, GOLD), 12, label_y)
    paste(frame, text_sprite("Formula:", 20), 12, label_y + 28)
    frame.flags.writeable = False
    return frame


class FormulaCardEnv(VisualEnv):
    """Base class of the arithmetic card games; subclasses deal the cards and set the limits."""

    operators: tuple[str, ...] = ()
    max_formula_length: int = 0

    def __init__(self, target_points: int, treat_face_cards_as_10: bool, render_mode: str | None) -> None:
        super().__init__(render_mode)
        if isinstance(target_points, bool) or not isinstance(target_points, (int, np.integer)) or target_points < 1:
            raise ValueError(f"target_points must be a positive integer, got {target_points!r}")
        self.target_points = int(target_points)
        self.treat_face_cards_as_10 = require_bool("treat_face_cards_as_10", treat_face_cards_as_10)
        largest = 10 if self.treat_face_cards_as_10 else 13
        self.action_names = (*(str(n) for n in range(1, largest + 1)), *self.operators, "=")
        self.action_space = spaces.Discrete(len(self.action_names))
        self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self.cards: list[Card] = []
        self.numbers: list[int] = []
        self.formula: list[str] = []  # the tokens written; blanks are not in it (see the module docstring)
        self.blanks = 0  # places taken by unavailable numbers
        self._cursor = (0, 0)
        self._solvable: bool | None = None

    # -- dealing and drawing -------------------------------------------------------------------
    def _deal(self) -> list[Card]:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def _card_layout(self) -> tuple[int, int, int]:
        """(card width, card height, top y) for the number of cards dealt."""
        if len(self.cards) <= 2:
            return 100, 140, 25
        return 64, 90, 40

    def _draw_table(self) -> None:
        width, height, top = self._card_layout()
        label_y = top + height + 14
        frame = table_background(self.target_points, label_y).copy()
        for card, x in zip(self.cards, row_positions(len(self.cards), width, 10, FRAME_SIZE - 10, 10)):
            paste(frame, card_sprite(card.rank, card.suit, width, height), x, top)
        self._frame = frame
        self._cursor = (12, label_y + 28 + LINE_HEIGHT)

    def _draw_token(self, token: str) -> None:
        """Append one token's sprite at the cursor, wrapping to the next line when it is full."""
        sprite = text_sprite(token, TOKEN_SIZE)
        x, y = self._cursor
        if x + sprite.shape[1] > FRAME_SIZE - 12:
            x, y = 12, y + LINE_HEIGHT
        frame = self._frame if self._frame.flags.writeable else self._frame.copy()
        paste(frame, sprite, x, y)
        self._frame = frame
        self._cursor = (x + sprite.shape[1] + 6, y)

    # -- gymnasium API -------------------------------------------------------------------------
    @property
    def formula_length(self) -> int:
        """The length the limit applies to: the tokens written plus the blanks."""
        return len(self.formula) + self.blanks

    def _info(self, success: bool = False) -> dict[str, Any]:
        return {
            "cards": [str(card) for card in self.cards],
            "numbers": list(self.numbers),
            "formula": list(self.formula),
            "formula_length": self.formula_length,
            "target": self.target_points,
            "success": success,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self.cards = self._deal()
        self.numbers = [card_value(card.rank, self.treat_face_cards_as_10) for card in self.cards]
        self.formula = []
        self.blanks = 0
        self._solvable = None
        self._draw_table()
        self._after_change()
        return self._frame.copy(), self._info()

    def step(self, action):
        self._require_running()
        action = self._check_action(action)
        token = self.action_names[action]
        reward, terminated, truncated, success = 0.0, False, False, False
        if self.formula_length > self.max_formula_length:
            # As published, the limit is checked before acting: this step is cut off, whatever it is.
            reward, truncated = INVALID_REWARD, True
        elif token == "=":
            success = formula_outcome(self.formula, self.numbers, self.target_points)
            reward = WIN_REWARD if success else INVALID_REWARD
            terminated = True
        elif is_number_token(token) and not number_available(int(token), self.formula, self.numbers):
            reward = INVALID_REWARD  # not on the table, or used up: a blank, so the formula still grows
            self.blanks += 1
        else:
            self.formula.append(token)
            self._draw_token(token)
        self._end_step(terminated or truncated)
        return self._frame.copy(), reward, terminated, truncated, self._info(success)

    # -- text protocol -------------------------------------------------------------------------
    @property
    def solvable(self) -> bool:
        """Whether the dealt numbers can make the target at all (cached per deal)."""
        if self._solvable is None:
            self._solvable = is_solvable(self.numbers, self.target_points, "".join(self.operators))
        return self._solvable

    def describe(self) -> str:
        cards = ", ".join(str(card) for card in self.cards)
        values = ", ".join(str(n) for n in self.numbers)
        formula = " ".join(self.formula) if self.formula else "(empty)"
        if self.blanks:
            formula += f" (and {self.blanks} blank{'s' if self.blanks > 1 else ''} left by unavailable numbers)"
        return (
            f"Cards: {cards} (values {values}). Current formula: {formula}. "
            f"Target: {self.target_points}. Use every card exactly once. "
            f"Formula length {self.formula_length} (blanks count); say '=' before it exceeds {self.max_formula_length}."
        )

    def expert_action(self) -> int:
        """The next token of a formula that completes the current one to the target.

        When no completion exists (an unsolvable deal, or a formula that already went wrong), the
        expert says "=" at once: every other continuation also ends in -1, later and with more
        penalties on the way. Blanks use up the length budget, so they shorten the completions
        that are still possible.
        """
        solution = complete_formula(
            self.formula,
            self.numbers,
            self.target_points,
            operators="".join(op for op in self.operators if op in "+-*/"),
            allow_parentheses="(" in self.operators,
            max_length=self.max_formula_length - self.blanks,
        )
        if solution is None or len(solution) == len(self.formula):
            return self.action_names.index("=")
        return self.action_names.index(solution[len(self.formula)])
