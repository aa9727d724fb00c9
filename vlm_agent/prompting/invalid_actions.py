"""What an unusable answer executes: the paper's random legal action (card games), the paper's
"nothing happens" (ALFWorld: the env is stepped with an inadmissible action, changes nothing and
pays -1), or a fallback with a reward penalty (:class:`InvalidActionPolicy`), applied by
:func:`resolve_action`. The one place this
rule lives: :mod:`vlm_agent.rollout.loop` calls it for training, evaluation and demonstrations alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from vlm_agent.prompting.parsing import ParsedAction, _validate_legal_actions

INVALID_ACTION_MODES = ("random", "penalty", "nothing")
"""The modes of :class:`InvalidActionPolicy`."""


@dataclass(frozen=True)
class InvalidActionPolicy:
    """What to do when an answer is unusable (``ParsedAction.index is None``).

    Attributes:
        mode: ``"random"``: a uniformly random legal action and no reward change, as the paper's
            card-game code did (it hides bad answers behind lucky moves). ``"penalty"``: the
            ``fallback`` action, and ``-penalty`` added to the step's reward. ``"nothing"``: the
            paper's ALFWorld rule, "nothing happens, reward -1": the environment is stepped with
            an action past its legal list (index ``len(legal_actions)``), which an env that
            accepts inadmissible commands (``gym_cards/ALFWorld-v0``) answers with "Nothing
            happens." and its own -1; the reward is not adjusted further.
        fallback: The action taken in ``"penalty"`` mode: an index into the legal actions, or an
            action text that must be legal at that step (e.g. ``"look"`` for ALFWorld).
        penalty: Non-negative amount subtracted from the reward in ``"penalty"`` mode; unused in
            ``"random"`` mode.
    """

    mode: Literal["random", "penalty", "nothing"] = "random"
    fallback: int | str = 0
    penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in INVALID_ACTION_MODES:
            raise ValueError(f"InvalidActionPolicy.mode must be one of {INVALID_ACTION_MODES}, got {self.mode!r}")
        if isinstance(self.fallback, bool) or not isinstance(self.fallback, (int, str)):
            raise TypeError(
                f"InvalidActionPolicy.fallback must be an action index (int) or an action text (str), "
                f"got {type(self.fallback).__name__} {self.fallback!r}"
            )
        if isinstance(self.fallback, int) and self.fallback < 0:
            raise ValueError(f"InvalidActionPolicy.fallback index must be >= 0, got {self.fallback}")
        if isinstance(self.fallback, str) and not self.fallback.strip():
            raise ValueError("InvalidActionPolicy.fallback must not be an empty action text")
        if isinstance(self.penalty, bool) or not isinstance(self.penalty, (int, float)):
            raise TypeError(f"InvalidActionPolicy.penalty must be a number, got {self.penalty!r}")
        if not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(
                f"InvalidActionPolicy.penalty must be a finite number >= 0 (it is subtracted from the reward), "
                f"got {self.penalty}"
            )

    def fallback_index(self, legal_actions: Sequence[str]) -> int:
        """The index of ``fallback`` among ``legal_actions``; ValueError when it is not legal."""
        if isinstance(self.fallback, int):
            if self.fallback >= len(legal_actions):
                raise ValueError(
                    f"InvalidActionPolicy.fallback index {self.fallback} is out of range for "
                    f"{len(legal_actions)} legal actions; use an index below {len(legal_actions)}"
                )
            return self.fallback
        try:
            return list(legal_actions).index(self.fallback)
        except ValueError:
            shown = ", ".join(repr(action) for action in list(legal_actions)[:20])
            raise ValueError(
                f"InvalidActionPolicy.fallback {self.fallback!r} is not a legal action now; legal: [{shown}"
                f"{', ...' if len(legal_actions) > 20 else ''}]. Use an action that is always legal or an index"
            ) from None


class ResolvedAction(NamedTuple):
    """The action actually executed for one answer; unpacks as ``index, invalid, reward_adjustment``.

    Attributes:
        index: Index into the legal actions, in ``range(len(legal_actions))``; only the
            ``"nothing"`` rule gives ``len(legal_actions)``, an inadmissible action.
        invalid: True when the answer was unusable and the policy chose the action; callers
            compute the invalid-answer rate from it.
        reward_adjustment: Added to the env's reward for this step (``-penalty`` or ``0.0``).
    """

    index: int
    invalid: bool
    reward_adjustment: float


def resolve_action(
    parsed: ParsedAction,
    legal_actions: Sequence[str],
    policy: InvalidActionPolicy,
    rng: np.random.Generator,
) -> ResolvedAction:
    """Turn a parsed answer into an executable action, applying ``policy`` to unusable answers.

    Args:
        parsed: The result of :func:`parse_action` for the same ``legal_actions``.
        legal_actions: The legal actions at this step.
        policy: What to do with an unusable answer.
        rng: The generator for ``"random"`` mode (seed it for reproducible rollouts); one
            ``rng.integers`` draw per invalid answer, none for a valid one.

    Raises:
        ValueError: ``parsed.index`` is out of range for ``legal_actions`` (parsed against other
            actions), or the policy's fallback is not legal here.
    """
    _validate_legal_actions(legal_actions)
    if parsed.index is not None:
        if not 0 <= parsed.index < len(legal_actions):
            raise ValueError(
                f"parsed.index {parsed.index} is out of range for {len(legal_actions)} legal actions: "
                "parse the answer against the same legal actions you resolve it with"
            )
        return ResolvedAction(parsed.index, False, 0.0)
    if policy.mode == "random":
        return ResolvedAction(int(rng.integers(len(legal_actions))), True, 0.0)
    if policy.mode == "nothing":
        return ResolvedAction(len(legal_actions), True, 0.0)
    return ResolvedAction(policy.fallback_index(legal_actions), True, -float(policy.penalty))
