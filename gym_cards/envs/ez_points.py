"""EZPoints: make 12 from two cards with "+" and "*"."""

from __future__ import annotations

from gym_cards.core.cards import Card, card_with_value
from gym_cards.envs.formula_game import FormulaCardEnv

def partner_values(first: int, target: int, largest: int = 10) -> list[int]:
    """Values v in 1..largest with ``first + v == target`` or ``first * v == target``."""
    return [v for v in range(1, largest + 1) if first + v == target or first * v == target]

class EZPointsEnv(FormulaCardEnv):
    """
    ## Description
    Two cards are dealt; write a formula that uses both and equals ``target_points`` (12), one token
    per step, then say "=". Face cards (J, Q, K) count as 10. The deal is always solvable: the
    second card is chosen so that a sum or a product of the two makes the target. From RL4VLM
    (Zhai et al., NeurIPS 2024).

    ## Action Space
    ``Discrete(13)``: 0-9 = the numbers 1..10, 10 = ``"+"``, 11 = ``"*"``, 12 = ``"="``.

    ## Observation Space
    ``Box(0, 255, (300, 300, 3), uint8)``: the two cards, the target and the formula so far.

    ## Starting State
    First card uniform over the cards that have a partner, second uniform over its partners; suits
    uniform. All from the env's seeded generator.

    ## Rewards
    -1 for a number that is not on the table or already used (the formula is unchanged, the episode
    goes on); on "=": +10 if the formula equals the target and uses both cards, else -1; -1 when
    the formula grows past 5 tokens; 0 otherwise.

    ## Episode End
    Terminates on "="; truncated when the formula grows past 5 tokens (as published), or by the
    registered ``max_episode_steps=300``.

    ## Arguments
    ``target_points`` (int, default 12), ``treat_face_cards_as_10`` (fixed to True here: the action
    space has numbers up to 10), ``render_mode``. ``info`` holds ``cards``, ``numbers``, ``formula``,
    ``target`` and ``success``.

    ## Version History
    * v0: first version, rules as published; formulas evaluated exactly by our own parser (numbers
      are never concatenated), seeded deals and suits.
    """

    operators = ("+", "*")
    max_formula_length = 5

    def __init__(self, target_points: int = 12, render_mode: str | None = None) -> None:
        super().__init__(target_points, True, render_mode)
        self._first_values = [v for v in range(1, 11) if partner_values(v, self.target_points)]
        if not self._first_values:
            raise ValueError(
                f"target_points={target_points} cannot be made from two cards worth 1..10 with + or *; "
                "choose a target between 2 and 100 that is a sum or product of two such values"
            )

    def _deal(self) -> list[Card]:
        first_value = self._first_values[int(self.np_random.integers(len(self._first_values)))]
        partners = partner_values(first_value, self.target_points)
        second_value = partners[int(self.np_random.integers(len(partners)))]
        return [card_with_value(first_value, self.np_random), card_with_value(second_value, self.np_random)]
