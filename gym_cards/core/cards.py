"""Playing cards: an infinite deck drawn from the environment's own generator."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from gym_cards.core.rendering import RANKS, SUITS


class Card(NamedTuple):
    rank: str  # "A", "2", ..., "10", "J", "Q", "K"
    suit: str  # "spades", "hearts", "diamonds", "clubs"

    def __str__(self) -> str:
        return f"{self.rank} of {self.suit}"


_VALUES = {rank: index + 1 for index, rank in enumerate(RANKS)}


def card_value(rank: str, face_cards_as_10: bool = True) -> int:
    """A rank's number: A = 1, 2..10 as written, J/Q/K = 10 (or 11/12/13)."""
    value = _VALUES[rank]
    return min(value, 10) if face_cards_as_10 else value


DECK = tuple(Card(rank, suit) for suit in SUITS for rank in RANKS)


def draw_card(np_random: np.random.Generator) -> Card:
    """One card from an infinite deck (rank and suit uniform), drawn with ``np_random``."""
    return DECK[int(np_random.integers(52))]


@lru_cache(maxsize=64)
def ranks_worth(value: int, face_cards_as_10: bool = True) -> tuple[str, ...]:
    """The ranks whose card is worth ``value`` (10, J, Q, K for 10 with faces as 10)."""
    return tuple(rank for rank in RANKS if card_value(rank, face_cards_as_10) == value)


def card_with_value(value: int, np_random: np.random.Generator, face_cards_as_10: bool = True) -> Card:
    """A card worth ``value``: with faces as 10, a 10 is drawn among 10/J/Q/K; the suit is random.

    Rank and suit come from one draw (uniform over rank x suit): a generator call costs more
    than the rest of a deal.
    """
    ranks = ranks_worth(value, face_cards_as_10)
    if not ranks:
        raise ValueError(f"no card is worth {value}")
    index = int(np_random.integers(len(ranks) * len(SUITS)))
    return Card(ranks[index // len(SUITS)], SUITS[index % len(SUITS)])
