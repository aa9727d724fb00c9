"""NumberLine: move a marker along a number line until it reaches the target."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces
from PIL import Image, ImageDraw

from gym_cards.core.arguments import require_bool
from gym_cards.core.rendering import FRAME_SIZE, font
from gym_cards.core.visual_env import VisualEnv

BACKGROUND = (250, 250, 245)
INK = (25, 25, 25)
TARGET_COLOUR = (200, 40, 40)
CURRENT_COLOUR = (30, 90, 200)


def move(current: int, action: int, max_position: int) -> int:
    """Position after ``action`` (0 = "-", 1 = "+"), kept inside [0, max_position]."""
    return min(max_position, max(0, current + (1 if action == 1 else -1)))


def step_reward(old: int, new: int, target: int) -> int:
    """+1 on reaching the target, -1 when the move did not get closer, else 0."""
    if new == target:
        return 1
    return -1 if abs(new - target) >= abs(old - target) else 0


#: The values of NumberLine's ``split`` option: every state, the training states, the evaluation states.
SPLITS = (None, "train", "eval")


def evaluation_pair(current: int, target: int) -> bool:
    """Whether the state (current, target) belongs to the evaluation split (``split="eval"``).

    The split is by the target and the side the marker stands on, which no move changes (the
    marker cannot pass the target without reaching it and ending the episode): a (target, side)
    class is held out when ``(3 * target + side + 1) % 5 == 0``, side 0 when current < target,
    1 when current > target. So an episode of either split never visits a state of the other;
    every target keeps one side in training (the two sides' values differ by 1 mod 5), so every
    target and every current value is seen in training, only not together. With max_position 20:
    88 of the 420 states are evaluation states (targets 3, 8, 13, 18 from the left, 1, 6, 11, 16
    from the right); with 5: 7 of 30.
    """
    side = 1 if current > target else 0
    return (3 * target + side + 1) % 5 == 0


@lru_cache(maxsize=4096)
def number_line_frame(max_position: int, target: int, current: int, show_number_line: bool = False) -> np.ndarray:
    """The observation image for a state: "Target: x" and "Current: y" as text, as published;
    with ``show_number_line`` a drawn number line with a target flag and a position marker too."""
    image = Image.new("RGB", (FRAME_SIZE, FRAME_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    big = font(40)
    if not show_number_line:
        draw.text((FRAME_SIZE // 2, 105), f"Target: {target}", font=big, fill=INK, anchor="mm")
        draw.text((FRAME_SIZE // 2, 195), f"Current: {current}", font=big, fill=INK, anchor="mm")
        frame = np.asarray(image, dtype=np.uint8)
        frame.flags.writeable = False
        return frame
    big = font(34)
    draw.text((30, 40), f"Target: {target}", font=big, fill=TARGET_COLOUR)
    draw.text((30, 95), f"Current: {current}", font=big, fill=CURRENT_COLOUR)
    left, right, y = 30, FRAME_SIZE - 30, 215
    draw.line([(left, y), (right, y)], fill=INK, width=3)
    small = font(14 if max_position <= 20 else 9)
    for position in range(max_position + 1):
        x = left + (right - left) * position / max(1, max_position)
        draw.line([(x, y - 7), (x, y + 7)], fill=INK, width=2)
        draw.text((x, y + 12), str(position), font=small, fill=INK, anchor="mt")
    tx = left + (right - left) * target / max(1, max_position)
    draw.line([(tx, y - 8), (tx, y - 48)], fill=TARGET_COLOUR, width=3)
    draw.polygon([(tx, y - 48), (tx + 20, y - 41), (tx, y - 34)], fill=TARGET_COLOUR)
    cx = left + (right - left) * current / max(1, max_position)
    draw.ellipse([cx - 9, y - 9, cx + 9, y + 9], fill=CURRENT_COLOUR)
    frame = np.asarray(image, dtype=np.uint8)
    frame.flags.writeable = False
    return frame


class NumberLineEnv(VisualEnv):
    """
    ## Description
    A marker stands on a number line from 0 to ``max_position``; the agent moves it one step left
    or right until it reaches the target. The image shows "Target: x" and "Current: y" as text, as
    published; ``show_number_line=True`` adds a drawn number line with a target flag and the
    marker. From RL4VLM (Zhai et al., NeurIPS 2024).

    ## Action Space
    ``Discrete(2)``: 0 = ``"-"`` (move left), 1 = ``"+"`` (move right). Moves past either end stay
    at the end.

    ## Observation Space
    ``Box(0, 255, (300, 300, 3), uint8)``: an RGB image.

    ## Starting State
    Target and start drawn uniformly from 0..max_position, start != target (with ``split``: from
    that split's states, see :func:`evaluation_pair`).

    ## Rewards
    +1 on reaching the target; -1 for a move that did not get closer; 0 otherwise.

    ## Episode End
    Terminates when the target is reached; truncated after ``2 * max_position`` steps (and by the
    registered ``max_episode_steps=300``). A ``step`` after the end raises ``RuntimeError``: call
    ``reset()``.

    ## Arguments
    ``max_position`` (int, default 5, at least 1), ``show_number_line`` (bool, default False: the
    published text-only image; a real boolean), ``split`` (None: every state; ``"train"`` or
    ``"eval"``: episodes start, and so stay, in disjoint halves of the states, by
    :func:`evaluation_pair`), ``render_mode`` (``"rgb_array"``, ``"human"``,
    None). ``reset`` takes no options. ``info`` holds ``target``, ``current`` and ``success``.

    ## Version History
    * v0: first version, rules and text-only image as published; optional drawn number line;
      frames cached per state, seeded by ``reset(seed=...)``.
    * v0, still before the first release: a step after the episode ended raises ``RuntimeError``
      (before, the marker moved on); ``show_number_line`` must be a boolean (``"no"`` was True);
      ``reset`` refuses options.
    * v0, still before the first release: ``split`` ("train" / "eval"), disjoint states for
      training and evaluation.
    """

    action_names = ("-", "+")

    def __init__(self, max_position: int = 5, show_number_line: bool = False, render_mode: str | None = None,
                 split: str | None = None) -> None:
        super().__init__(render_mode)
        if isinstance(max_position, bool) or not isinstance(max_position, (int, np.integer)) or max_position < 1:
            raise ValueError(f"max_position must be an integer >= 1, got {max_position!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be None, 'train' or 'eval', got {split!r}")
        self.max_position = int(max_position)
        self.split = split
        states = [(c, t) for t in range(self.max_position + 1) for c in range(self.max_position + 1) if c != t]
        self._starts = [s for s in states if split is None or evaluation_pair(*s) == (split == "eval")]
        if not self._starts:
            raise ValueError(f"max_position {max_position} has no {split!r} states")
        self.show_number_line = require_bool("show_number_line", show_number_line)
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self.target = 0
        self.current = 1
        self.steps = 0

    def _info(self, success: bool = False) -> dict[str, Any]:
        return {"target": self.target, "current": self.current, "success": success}

    def _observe(self) -> np.ndarray:
        self._frame = number_line_frame(self.max_position, self.target, self.current, self.show_number_line)
        return self._frame.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        if self.split is None:  # the original draw (same seed, same episode as before the split existed)
            self.target = int(self.np_random.integers(0, self.max_position + 1))
            start = int(self.np_random.integers(0, self.max_position))
            self.current = start if start < self.target else start + 1  # uniform over positions != target
        else:
            self.current, self.target = self._starts[int(self.np_random.integers(len(self._starts)))]
        self.steps = 0
        observation = self._observe()
        self._after_change()
        return observation, self._info()

    def step(self, action):
        self._require_running()
        action = self._check_action(action)
        old = self.current
        self.current = move(old, action, self.max_position)
        self.steps += 1
        reward = step_reward(old, self.current, self.target)
        terminated = self.current == self.target
        truncated = not terminated and self.steps >= 2 * self.max_position
        observation = self._observe()
        self._end_step(terminated or truncated)
        return observation, float(reward), terminated, truncated, self._info(success=terminated)

    def describe(self) -> str:
        return f"Target number: {self.target}. Current number: {self.current}. Positions range from 0 to {self.max_position}."

    def expert_action(self) -> int:
        return 1 if self.target > self.current else 0
