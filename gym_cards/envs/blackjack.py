"""Blackjack, seen as an image: the dealer's up card and hidden card, then the player's cards."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from gym_cards.core.arguments import require_bool
from gym_cards.core.cards import Card, card_value, draw_card
from gym_cards.core.rendering import (
    RANKS,
    FRAME_SIZE,
    GOLD,
    blank_frame,
    card_back_sprite,
    card_sprite,
    paste,
    row_positions,
    text_sprite,
)
from gym_cards.core.visual_env import VisualEnv

CARD_WIDTH, CARD_HEIGHT = 64, 90
DEALER_Y, PLAYER_Y = 40, 175


def hand_values(hand: list[Card]) -> list[int]:
    """The cards' values with an ace as 1 and faces as 10."""
    return [card_value(card.rank) for card in hand]


_VALUE = {rank: card_value(rank) for rank in RANKS}


def hand_total(hand: list[Card]) -> tuple[int, bool]:
    """(best total, usable ace): an ace counts 11 when that does not bust the hand."""
    total, has_ace = 0, False
    for card in hand:
        value = _VALUE[card.rank]
        total += value
        has_ace = has_ace or value == 1
    usable = has_ace and total <= 11
    return (total + 10 if usable else total), usable


def usable_ace(hand: list[Card]) -> bool:
    """Whether the hand holds an ace that can count as 11 without busting."""
    return hand_total(hand)[1]


def sum_hand(hand: list[Card]) -> int:
    """The hand's best total: an ace counts 11 when that does not bust."""
    return hand_total(hand)[0]


def is_bust(hand: list[Card]) -> bool:
    return sum_hand(hand) > 21


def score(hand: list[Card]) -> int:
    """0 for a bust hand, else its total."""
    return 0 if is_bust(hand) else sum_hand(hand)


def is_natural(hand: list[Card]) -> bool:
    """An ace and a ten-valued card as the first two cards."""
    return sorted(hand_values(hand)) == [1, 10]


def basic_strategy(player_sum: int, dealer_value: int, soft: bool) -> int:
    """Hit (1) or stand (0) by basic strategy for an infinite deck, dealer standing on all 17s.

    No doubling or splitting exists in this game, so the hit/stand table is used: soft 19+ stands,
    soft 18 stands against 2-8, soft 17- hits; hard 17+ stands, 13-16 stand against 2-6, 12 stands
    against 4-6, 11- hits. ``dealer_value`` is the up card's value with an ace as 1.
    """
    dealer = 11 if dealer_value == 1 else dealer_value
    if soft:
        if player_sum >= 19:
            return 0
        if player_sum == 18:
            return 0 if dealer <= 8 else 1
        return 1
    if player_sum >= 17:
        return 0
    if player_sum >= 13:
        return 0 if dealer <= 6 else 1
    if player_sum == 12:
        return 0 if 4 <= dealer <= 6 else 1
    return 1


@lru_cache(maxsize=1)
def table_frame() -> np.ndarray:
    """The empty table: felt with the "Dealer" and "Player" labels."""
    frame = blank_frame()
    paste(frame, text_sprite("Dealer", 18, GOLD), 12, DEALER_Y - 28)
    paste(frame, text_sprite("Player", 18, GOLD), 12, PLAYER_Y - 28)
    frame.flags.writeable = False
    return frame


@lru_cache(maxsize=52)
def dealer_opening_row(up_card: Card) -> np.ndarray:
    """The dealer's row while the hand is played: the up card and a card back."""
    row = table_frame()[DEALER_Y : DEALER_Y + CARD_HEIGHT].copy()
    first, second = row_positions(2, CARD_WIDTH, 10, FRAME_SIZE - 10, 8)
    paste(row, card_sprite(up_card.rank, up_card.suit, CARD_WIDTH, CARD_HEIGHT), first, 0)
    paste(row, card_back_sprite(CARD_WIDTH, CARD_HEIGHT), second, 0)
    row.flags.writeable = False
    return row


class BlackjackEnv(VisualEnv):
    """
    ## Description
    Blackjack with Gymnasium's rules (infinite deck, the dealer draws until 17 or more), seen as
    an image: the dealer's face-up card and a face-down card at the top, the player's cards below.
    When the hand ends the dealer's cards are shown face up. From RL4VLM (Zhai et al., NeurIPS 2024).

    ## Action Space
    ``Discrete(2)``: 0 = ``"stand"`` (stick), 1 = ``"hit"``.

    ## Observation Space
    ``Box(0, 255, (300, 300, 3), uint8)``; with ``is_pixel=False`` Gymnasium's symbolic
    ``Tuple(Discrete(32), Discrete(11), Discrete(2))`` (player sum, dealer card, usable ace).

    ## Starting State
    Two cards each for the dealer and the player; ranks and suits from the env's seeded generator.

    ## Rewards
    +1 win, 0 draw, -1 loss (bust included); with ``natural=True`` a winning natural pays +1.5;
    with ``sab=True`` (Sutton & Barto) a player's natural wins +1 unless the dealer also has one.

    ## Episode End
    Terminates when the player busts or stands (or by ``max_episode_steps=300``). A ``step``
    after the end raises ``RuntimeError``: call ``reset()``.

    ## Arguments
    ``natural`` (bool, False), ``sab`` (bool, False), ``is_pixel`` (bool, True), ``render_mode``;
    flags must be real booleans. ``reset`` takes no options.
    ``info`` holds ``dealer_card``, ``player_cards``, ``player_sum``, ``usable_ace`` and ``success``.

    ## Version History
    * v0: first version; Gymnasium's rules, cards drawn by our own code, seeded suits.
    * v0, still before the first release: flags must be booleans (``natural="no"`` was True);
      ``reset`` refuses options; a step before the first ``reset`` is refused too.
    """

    action_names = ("stand", "hit")

    def __init__(
        self, natural: bool = False, sab: bool = False, is_pixel: bool = True, render_mode: str | None = None
    ) -> None:
        super().__init__(render_mode)
        self.natural = require_bool("natural", natural)
        self.sab = require_bool("sab", sab)
        self.is_pixel = require_bool("is_pixel", is_pixel)
        self.action_space = spaces.Discrete(2)
        if self.is_pixel:
            self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        else:
            self.observation_space = spaces.Tuple((spaces.Discrete(32), spaces.Discrete(11), spaces.Discrete(2)))
        self._frame = table_frame().copy()
        self.dealer: list[Card] = []
        self.player: list[Card] = []
        self.finished = False

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self) -> None:
        # The frame is private (observations are copies): only the two card rows ever change.
        self._draw_row(self.dealer, DEALER_Y, hide_second=not self.finished)
        self._draw_row(self.player, PLAYER_Y, hide_second=False)

    def _draw_row(self, hand: list[Card], y: int, hide_second: bool) -> None:
        if hide_second:  # the dealer's opening row: one of 52 strips, cached
            self._frame[y : y + CARD_HEIGHT] = dealer_opening_row(hand[0])
            return
        self._frame[y : y + CARD_HEIGHT] = table_frame()[y : y + CARD_HEIGHT]  # clear the row first
        for card, x in zip(hand, row_positions(len(hand), CARD_WIDTH, 10, FRAME_SIZE - 10, 8)):
            paste(self._frame, card_sprite(card.rank, card.suit, CARD_WIDTH, CARD_HEIGHT), x, y)

    def _observation(self):
        if self.is_pixel:
            return self._frame.copy()
        return (sum_hand(self.player), card_value(self.dealer[0].rank), int(usable_ace(self.player)))

    def _info(self, success: bool = False) -> dict[str, Any]:
        total, usable = hand_total(self.player)
        return {
            "dealer_card": str(self.dealer[0]),
            "player_cards": [str(card) for card in self.player],
            "player_sum": total,
            "usable_ace": usable,
            "success": success,
        }

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self.dealer = [draw_card(self.np_random), draw_card(self.np_random)]
        self.player = [draw_card(self.np_random), draw_card(self.np_random)]
        self.finished = False
        self._draw()
        self._after_change()
        return self._observation(), self._info()

    def step(self, action):
        self._require_running()
        action = self._check_action(action)
        if action == 1:
            self.player.append(draw_card(self.np_random))
            self._draw_row(self.player, PLAYER_Y, hide_second=False)
            terminated = is_bust(self.player)
            reward = -1.0 if terminated else 0.0
        else:
            terminated = True
            while sum_hand(self.dealer) < 17:
                self.dealer.append(draw_card(self.np_random))
            reward = float(np.sign(score(self.player) - score(self.dealer)))
            if self.sab and is_natural(self.player) and not is_natural(self.dealer):
                reward = 1.0
            elif not self.sab and self.natural and is_natural(self.player) and reward == 1.0:
                reward = 1.5
        if terminated:
            self.finished = True
            self._draw_row(self.dealer, DEALER_Y, hide_second=False)
        self._end_step(terminated)
        return self._observation(), reward, terminated, False, self._info(success=terminated and reward > 0)

    # -- text protocol -------------------------------------------------------------------------
    def describe(self) -> str:
        player = ", ".join(str(card) for card in self.player)
        ace = " with a usable ace" if usable_ace(self.player) else ""
        if self.finished:
            dealer = ", ".join(str(card) for card in self.dealer)
            return f"Dealer's cards: {dealer} (total {sum_hand(self.dealer)}). Your cards: {player} (total {sum_hand(self.player)}{ace})."
        return (
            f"Dealer shows: {self.dealer[0]} (value {card_value(self.dealer[0].rank)}), one card face down. "
            f"Your cards: {player} (total {sum_hand(self.player)}{ace})."
        )

    def expert_action(self) -> int:
        return basic_strategy(sum_hand(self.player), card_value(self.dealer[0].rank), usable_ace(self.player))
