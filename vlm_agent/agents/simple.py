"""Reference players that need no model: a uniformly random player and the environment's expert.

They answer in the same JSON format the prompt asks for, so their moves go through the same
parser as a model's: the random row is the floor of Table 1, the expert row its ceiling (the best
any policy can do with this parser and these rules).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from vlm_agent.rollout.agent import AgentInput, TokenUsage


def json_answer(action: str) -> str:
    """The answer ``{"action": "<action>"}`` as the prompt asks for it."""
    return json.dumps({"action": action})


class RandomAgent:
    """Answers a uniformly random legal action.

    Args:
        seed: Seed of the generator; one draw per input, in batch order.
    """

    name = "random"
    uses_expert_action = False

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        """One random legal action per input, as a JSON answer."""
        return [json_answer(agent_input.legal_actions[int(self._rng.integers(
            len(agent_input.legal_actions)))]) for agent_input in inputs]

    def usage(self) -> TokenUsage:
        """No model, no tokens."""
        return TokenUsage()

    def close(self) -> None:
        """Nothing to release."""


class ExpertAgent:
    """Answers the environment's expert move (``env.unwrapped.expert_action()``).

    Raises ValueError for an input without an expert move.
    """

    name = "expert"
    uses_expert_action = True

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        """The expert's legal action per input, as a JSON answer."""
        answers = []
        for agent_input in inputs:
            if agent_input.expert_action is None:
                raise ValueError("the expert agent needs AgentInput.expert_action, which is None "
                                 "for this environment")
            answers.append(json_answer(agent_input.legal_actions[agent_input.expert_action]))
        return answers

    def usage(self) -> TokenUsage:
        """No model, no tokens."""
        return TokenUsage()

    def close(self) -> None:
        """Nothing to release."""
