"""What every gym_cards environment shares: pixel observations, rendering and the text protocol.

Besides the Gymnasium API, each environment answers three questions that agents and prompts need
(see ``docs/CONTRACTS.md``):

* ``legal_actions()``: the text form of the actions legal now; ``step(i)`` executes the i-th;
* ``describe()``: a text description of the current state, derived from the same state as the
  pixels (for text-only models and for prompts);
* ``expert_action()``: the action an optimal player takes now.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from gym_cards.core.arguments import check_reset_options, episode_over_error
from gym_cards.core.rendering import FRAME_SIZE


def missing_extra_error(package: str, extra: str) -> ImportError:
    """The error raised when an optional dependency is missing: it names the extra to install."""
    return ImportError(
        f"{package} is not installed; it is needed here. Install it with "
        f"`pip install \"gym-cards-vlm[{extra}]\"` (or `pip install {package}`)."
    )


class HumanWindow:
    """A pygame window showing frames; pygame is imported only when the window opens."""

    def __init__(self, title: str, size: int = FRAME_SIZE * 2, fps: int = 4) -> None:
        try:
            import pygame
        except ImportError as error:
            raise missing_extra_error("pygame", "human") from error
        self._pygame = pygame
        pygame.display.init()  # the display only: no audio device is opened
        pygame.display.set_caption(title)
        self.screen = pygame.display.set_mode((size, size))
        self.clock = pygame.time.Clock()
        self.size = size
        self.fps = fps

    def show(self, frame: np.ndarray) -> None:
        pygame = self._pygame
        pygame.event.pump()
        surface = pygame.surfarray.make_surface(np.transpose(frame, (1, 0, 2)))
        self.screen.blit(pygame.transform.scale(surface, (self.size, self.size)), (0, 0))
        pygame.display.flip()
        self.clock.tick(self.fps)

    def close(self) -> None:
        self._pygame.display.quit()


class VisualEnv(gym.Env):
    """Base class: subclasses keep ``self._frame`` (the current observation image) up to date.

    It also keeps the episode's state: subclasses call ``super().reset(seed=..., options=...)``
    (which refuses options the card games do not have), ``self._require_running()`` first in
    ``step`` (a step before ``reset`` or after the episode ended raises ``RuntimeError`` and
    changes nothing) and ``self._end_step(done)`` last.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 4}
    action_names: tuple[str, ...] = ()

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; use one of {self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        self._frame = np.zeros((FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
        self._window: HumanWindow | None = None
        self._episode_started = False
        self._episode_over = True

    # -- episode state -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Seed the generator and start an episode; the card games take no ``options``."""
        check_reset_options(type(self).__name__, options)
        super().reset(seed=seed)
        self._episode_started = True
        self._episode_over = False

    def _require_running(self) -> None:
        """Refuse a step outside an episode: paying the final reward again would be a silent lie."""
        if self._episode_over:
            raise episode_over_error(type(self).__name__, self._episode_started)

    def _end_step(self, done: bool) -> None:
        self._episode_over = done
        self._after_change()

    # -- text protocol -------------------------------------------------------------------------
    def legal_actions(self) -> list[str]:
        """The text form of the actions legal now; ``step(i)`` executes ``legal_actions()[i]``."""
        return list(self.action_names)

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def expert_action(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    # -- rendering -----------------------------------------------------------------------------
    def _check_action(self, action: Any) -> int:
        """The action as an int, or a clear error for anything outside the action space."""
        if isinstance(action, (np.ndarray,)) and action.shape == ():
            action = action.item()
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(
                f"{type(self).__name__}.step expects an integer action id, got {action!r}; "
                f"the ids are 0..{len(self.action_names) - 1} for {list(self.action_names)}"
            )
        if not 0 <= int(action) < len(self.action_names):
            raise ValueError(
                f"action {action} is out of range for {type(self).__name__}: expected 0..{len(self.action_names) - 1} "
                f"({', '.join(f'{i}={name!r}' for i, name in enumerate(self.action_names))})"
            )
        return int(action)

    def _after_change(self) -> None:
        if self.render_mode == "human":
            self.render()

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the observation's pixels (a copy); ``human``: show them in a window."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render_mode; pass render_mode='rgb_array' or 'human' to gymnasium.make"
            )
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self._window is None:
            self._window = HumanWindow(type(self).__name__, fps=self.metadata["render_fps"])
        self._window.show(self._frame)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_window"] = None  # a window cannot travel; it reopens on the next human render
        return state
