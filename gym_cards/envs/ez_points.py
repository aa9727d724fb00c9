"""EZPoints: make 12 from two cards with "+" and "*"."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gym_cards.core.cards import Card, card_value, card_with_value
from gym_cards.core.formula_game import FormulaCardEnv
from gym_cards.core.rendering import RANKS, SUITS


@lru_cache(maxsize=1024)
def partner_values(first: int, target: int, largest: int = 10) -> tuple[int, ...]:
    """Values v in 1..largest with ``first + v == target`` or ``first * v == target``."""
    return tuple(v for v in range(1, largest + 1) if first + v == target or first * v == target)


@lru_cache(maxsize=256)
def first_card_ranks(target: int) -> tuple[str, ...]:
    """The ranks the first card is drawn from: those whose value (faces count 10) has a partner.

    For the target 12 these are 2..K, as in the original (an ace would need an 11 or a 12).
    """
    return tuple(rank for rank in RANKS if partner_values(card_value(rank), target))


def deal_pair(np_random: np.random.Generator, target: int) -> list[Card]:
    """Two cards that make ``target`` with "+" or "*", dealt as the original RL4VLM env deals them.

    The first card's rank is uniform over :func:`first_card_ranks` (so with the target 12 a value
    of 10 has weight 4/12: the 10, J, Q and K); its partner is one of its :func:`partner_values`
    with equal probability (for 12: ``12 // x`` or ``12 - x`` with probability 1/2 each when x is
    2, 3, 4 or 6, else ``12 - x``); then the two are shown in random order. Suits, and which of
    10/J/Q/K a partner worth 10 is, are ours (uniform). Every draw uses ``np_random``; choices
    that are independent share one draw (three generator calls a deal, resets are frequent).
    """
    ranks = first_card_ranks(target)
    index = int(np_random.integers(len(ranks) * len(SUITS)))  # rank and suit in one draw
    first = Card(ranks[index // len(SUITS)], SUITS[index % len(SUITS)])
    partners = partner_values(card_value(first.rank), target)
    index = int(np_random.integers(len(partners) * 2))  # which partner, and which card comes first
    second = card_with_value(partners[index // 2], np_random)
    return [second, first] if index % 2 else [first, second]


class EZPointsEnv(FormulaCardEnv):
    """
    ## Description
    Two cards are dealt; write a formula that uses both and equals ``target_points`` (12), one token
    per step, then say "=". Face cards (J, Q, K) count as 10. The deal is always solvable: the
    second card is chosen so that a sum or a product of the two makes the target. From RL4VLM
    (Zhai et al., NeurIPS 2024); the rules match the original env step for step (see
    :mod:`gym_cards.core.formula_game`).

    ## Action Space
    ``Discrete(13)``: 0-9 = the numbers 1..10, 10 = ``"+"``, 11 = ``"*"``, 12 = ``"="``.

    ## Observation Space
    ``Box(0, 255, (300, 300, 3), uint8)``: the two cards, the target and the formula so far.

    ## Starting State
    As the original deals (:func:`deal_pair`): the first card's rank uniform over 2..K (J, Q, K
    count 10, so a 10 has weight 4/12), its partner ``12 // x`` or ``12 - x`` with probability 1/2
    each when x is 2, 3, 4 or 6 and ``12 - x`` otherwise, then the two in random order. So the
    pair (2, 10) is dealt with probability 3/8, and 1/6 of the deals need "*". Suits uniform. All
    from the env's seeded generator.

    ## Rewards
    -1 for a number that is not on the table or already used: nothing is written, but a blank
    takes its place, so it counts towards the length limit; on "=": +10 if the formula equals the
    target and uses both cards, else -1; -1 on the step after the formula (blanks included) has
    grown past 5 tokens; 0 otherwise.

    ## Episode End
    Terminates on "="; truncated on the step after the formula has grown past 5 tokens (blanks
    included; the step is not carried out, as published), or by the registered
    ``max_episode_steps=300``. A ``step`` after the end raises ``RuntimeError``: call ``reset()``.

    ## Arguments
    ``target_points`` (int, default 12), ``treat_face_cards_as_10`` (fixed to True here: the action
    space has numbers up to 10), ``render_mode``. ``reset`` takes no options. ``info`` holds
    ``cards``, ``numbers``, ``formula`` (the tokens written; blanks are neither listed nor drawn),
    ``formula_length`` (tokens plus blanks: what the limit counts), ``target`` and ``success``.

    ## Version History
    * v0: first version, rules as published; formulas evaluated exactly by our own parser (numbers
      are never concatenated), seeded deals and suits.
    * v0, still before the first release (kept as v0 since no release had the older rules):
      rules aligned with the original step for step. An unavailable number now leaves a blank that
      counts towards the limit (before, the formula was unchanged, so such an episode ran to 300
      steps); the limit is checked before acting (before, the step adding the 6th token was
      truncated); deals follow the original distribution (before, the first value was uniform over
      the values that have a partner: (2, 10) came 17% of the time instead of 37.5%). A step after
      the episode ended raises ``RuntimeError`` (before, "=" paid again); ``reset`` refuses options.
    """

    operators = ("+", "*")
    max_formula_length = 5

    def __init__(self, target_points: int = 12, render_mode: str | None = None) -> None:
        super().__init__(target_points, True, render_mode)
        if not first_card_ranks(self.target_points):
            raise ValueError(
                f"target_points={target_points} cannot be made from two cards worth 1..10 with + or *; "
                "choose a target between 2 and 100 that is a sum or product of two such values"
            )

    def _deal(self) -> list[Card]:
        return deal_pair(self.np_random, self.target_points)
