""":class:`BlankImages`, the control of any image-reading result: the same agent, shown a frame of
each image's background colour instead (:func:`blank_like`). What it still achieves is what the
agent gets without reading the image. :class:`OtherStateImages`, the stronger control: the same
agent shown the image of another state (a frame like those it was trained on, of the wrong
state), so what it scores there shows whether its answers follow what is drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

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


class OtherStateImages:
    """``agent`` shown, instead of every image, the image of another state; prompts unchanged.

    ``frames``: images of states of other episodes (e.g. the first frames of other evaluation
    episodes); each step shows one drawn (by ``seed``) from those that differ from its own image.
    An agent that acts on what is drawn plays the other state's move here, near random play.
    """

    def __init__(self, agent: Agent, frames: Sequence[np.ndarray], seed: int = 0) -> None:
        self.frames = [np.asarray(frame) for frame in frames]
        if len({frame.tobytes() for frame in self.frames}) < 2:
            raise ValueError("OtherStateImages needs frames of at least two different states")
        self.agent = agent
        self.name = f"{agent.name} (other state's image)"
        self.uses_expert_action = agent.uses_expert_action
        self._rng = np.random.default_rng(seed)

    def _other(self, image: np.ndarray) -> np.ndarray:
        while True:
            frame = self.frames[int(self._rng.integers(len(self.frames)))]
            if frame.shape != image.shape or not np.array_equal(frame, image):
                return frame

    def respond(self, inputs: Sequence[AgentInput]) -> list[str]:
        return self.agent.respond([dataclasses.replace(i, image=self._other(i.image)) for i in inputs])

    def usage(self) -> TokenUsage:
        return self.agent.usage()

    def close(self) -> None:
        self.agent.close()


def other_episode_frames(env_id: str, env_kwargs: Mapping[str, Any] | None, count: int, seed: int) -> list[np.ndarray]:
    """The first frames of ``count`` evaluation episodes of run seed ``seed`` (``held_out_seed(seed, i)``):
    with ``seed + 1`` they are the frames of other episodes of a run evaluated at ``seed``."""
    from vlm_agent.rollout.environments import observation_image
    from vlm_agent.rollout.loop import held_out_seed, make_env

    env = make_env(env_id, env_kwargs)
    try:
        return [observation_image(env.reset(seed=held_out_seed(seed, i))[0]).copy() for i in range(count)]
    finally:
        env.close()
