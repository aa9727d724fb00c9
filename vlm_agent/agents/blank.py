""":class:`BlankImages`, the control of any image-reading result: the same agent, shown a frame of
each image's background colour instead (:func:`blank_like`). What it still achieves is what the
agent gets without reading the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vlm_agent.rollout.agent import Agent, AgentInput, TokenUsage


def blank_like(image: np.ndarray) -> np.ndarray:
    """A frame of the image's background colour (its top-left pixel): the same size, no content."""
    return np.broadcast_to(image[:1, :1], image.shape).copy()


class BlankImages:
    """``agent`` shown a blank frame (:func:`blank_like`) instead of every image; prompts unchanged.

    The control of an image-reading agent: what it scores here it scores without reading the
    image (from the prompt, or by the play its answers default to).
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.name = f"{agent.name} (blank image)"
        self.uses_expert_action = agent.uses_expert_action

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        return self.agent.respond([dataclasses.replace(i, image=blank_like(i.image)) for i in inputs])

    def usage(self) -> TokenUsage:
        return self.agent.usage()

    def close(self) -> None:
        self.agent.close()
