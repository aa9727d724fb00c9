"""ALFWorld as a visual Gymnasium environment (``gym_cards/ALFWorld-v0``).

## Description
Household tasks from ALFWorld (Shridhar et al., 2021) as RL4VLM played them: the agent reads
a task ("put a hot plate in countertop"), sees where it is and what is around, and issues one
of the admissible text commands per step ("go to fridge 1", "open fridge 1", "take plate 1 from
fridge 1", "heat plate 1 with microwave 1", ...). Six task types: pick_and_place_simple,
look_at_obj_in_light, pick_clean_then_place_in_recep, pick_heat_then_place_in_recep,
pick_cool_then_place_in_recep, pick_two_obj_and_place.

Games come from, in order: ``data_path=`` if given; ``$ALFWORLD_DATA/json_2.1.1`` when the
official release is there; otherwise the small pack of generated games shipped in
``gym_cards/alfworld/pack`` (made by ``gym-cards alfworld-generate``), so the env runs offline.

## Action Space
``Discrete(MAX_ADMISSIBLE_COMMANDS)``: ``step(i)`` executes ``legal_actions()[i]`` (primary form,
as in every gym_cards env). ``step`` also accepts the command text itself (a ``str``, compared
after lower-casing and collapsing spaces). An index
past the end of the list, or a text that is not admissible, changes nothing and costs -1.
The index must be an integer (Python or numpy, or a 0-d integer array); bools, floats, bytes
and other types raise ``TypeError`` instead of being converted (``int(1.7)`` would silently run
command 1).

## Observation Space
``Dict(image=Box(0, 255, (image_size, image_size, 3), uint8), text=Text, admissible_commands=Text)``:
- ``image``: ``backend="text"``: the world state drawn from the engine's facts (see
  :mod:`gym_cards.alfworld.render`); ``backend="thor"``: AI2-THOR's 300x300 frame.
- ``text``: :meth:`ALFWorldEnv.describe`, the engine's last feedback and the task.
- ``admissible_commands``: the legal commands, one per line (also :meth:`legal_actions`).
Characters outside printable ASCII are replaced by ``?``.

## Starting State
``reset(seed=...)`` draws a game uniformly from the selected split and task types with the env's
generator (same seed, same game and same observations); ``options={"game": i_or_path}`` picks one
(an int index into ``game_files`` or the path of a ``game.tw-pddl`` file). ``options`` must be a
mapping (``TypeError`` otherwise) and ``"game"`` is its only key (``ValueError`` for others).

## Rewards
RL4VLM's: ``50 * won + goal_condition_success_rate``, minus 1 when the action was not admissible.
``goal_condition_success_rate`` is the share of the task's goal conditions that hold now
(computed from the facts, see :mod:`gym_cards.alfworld.tasks`; THOR computes its own).

## Episode End
Terminated when the task is done (``won``). Registered with ``max_episode_steps=50`` (ALFWorld's
evaluation budget); the shipped games are all won by alfworld's expert within that limit. A
``step`` after the task was won raises ``RuntimeError`` (call ``reset()``): it would otherwise pay
the 51 again.

## Arguments
``task_types`` (names, short names pick/look/clean/heat/cool/pick_two, numbers 1..6, or None
for all), ``split`` ("train", "eval" = unseen scenes, "eval_in_distribution" = official
valid_seen only), ``backend`` ("text" or "thor"), ``data_path``, ``image_size`` (text backend,
default 300), ``render_mode`` (None or "rgb_array").

## Info
``success`` (True exactly on the step that wins), ``won``, ``admissible`` (was the action
admissible), ``command`` (the text tried), ``admissible_commands``, ``goal_condition_success_rate``,
``task`` (sentence), ``task_type``, ``gamefile``, ``expert_command``.

## Version History
- v0: first version.
- v0, still before the first release: a step after the win raises ``RuntimeError`` (before, it
  paid 51 again with ``success=True``); ``step`` accepts integers and command strings only
  (before, ``int(action)`` ran 1.7, True and b"0" as commands); ``reset`` validates ``options``.
"""

from __future__ import annotations

import os
import string
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gym_cards.alfworld.backends import (
    BackendState,
    TextBackend,
    ThorBackend,
    require_thor,
)
from gym_cards.alfworld.engine import import_alfworld, user_alfworld_data
from gym_cards.alfworld.tasks import alfworld_reward, resolve_task_types
from gym_cards.core.arguments import check_reset_options, episode_over_error

MAX_ADMISSIBLE_COMMANDS = 256
"""Size of the Discrete action space; real games offer well under 100 commands."""

MAX_TEXT_LENGTH = 16384
TEXT_CHARSET = string.printable
"""Printable ASCII plus whitespace: every character the engine's text uses."""

MAX_EPISODE_STEPS = 50
"""The step limit the env is registered with (ALFWorld's evaluation budget)."""

PACK_DIR = os.path.join(os.path.dirname(__file__), "pack")
"""Generated games shipped with the package (``pack/json_2.1.1/{train,valid_unseen}``)."""

SPLIT_DIRS = {"train": "train", "eval": "valid_unseen", "eval_in_distribution": "valid_seen"}


def _ascii_text(text: str) -> str:
    return "".join(ch if ch in TEXT_CHARSET else "?" for ch in text)[:MAX_TEXT_LENGTH]


def resolve_games_root(data_path: str | None, split: str) -> str:
    """The folder whose games a split plays (see the module docstring for the search order)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLIT_DIRS)}.")
    if data_path is None:
        env_data = user_alfworld_data()
        if env_data and os.path.isdir(os.path.join(env_data, "json_2.1.1")):
            data_path = env_data
        else:
            data_path = PACK_DIR
    if not os.path.isdir(data_path):
        raise FileNotFoundError(f"ALFWorld data_path {data_path!r} is not a folder.")
    root = os.path.join(data_path, "json_2.1.1") if os.path.isdir(os.path.join(data_path, "json_2.1.1")) else data_path
    split_root = os.path.join(root, SPLIT_DIRS[split])
    if os.path.isdir(split_root):
        return split_root
    if os.path.basename(os.path.normpath(root)) in SPLIT_DIRS.values() or os.path.exists(os.path.join(root, "traj_data.json")):
        return root  # a split folder (or a single game) given directly
    raise FileNotFoundError(
        f"No {SPLIT_DIRS[split]!r} folder under {root!r} for split={split!r}. Point data_path at an "
        "ALFWorld json_2.1.1 folder (or its parent), or generate games with "
        "`gym-cards alfworld-generate --out DIR`."
    )


def collect_game_files(root: str, task_types: tuple[str, ...]) -> list[str]:
    """Playable ``game.tw-pddl`` files under root, filtered as alfworld's ``AlfredTWEnv`` does
    (no movable/sliced tasks, task type selected, ``"solvable": true``), sorted."""
    import json

    games = []
    for folder, _dirs, files in os.walk(root):
        if "traj_data.json" not in files or "game.tw-pddl" not in files:
            continue
        if "movable" in folder or "Sliced" in folder:
            continue
        with open(os.path.join(folder, "traj_data.json")) as handle:
            if json.load(handle)["task_type"] not in task_types:
                continue
        game_file = os.path.join(folder, "game.tw-pddl")
        with open(game_file) as handle:
            if not json.load(handle).get("solvable", False):
                continue
        games.append(game_file)
    return sorted(games)


class ALFWorldEnv(gym.Env):
    """ALFWorld household tasks with an image observation. See the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        task_types: Any = None,
        split: str = "train",
        backend: str = "text",
        data_path: str | None = None,
        image_size: int = 300,
        render_mode: str | None = None,
    ) -> None:
        if backend not in ("text", "thor"):
            raise ValueError(f"Unknown backend {backend!r}; choose 'text' (offline renderer) or 'thor' (AI2-THOR).")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Unsupported render_mode {render_mode!r}; ALFWorld-v0 supports None or 'rgb_array'.")
        if not isinstance(image_size, int) or not 64 <= image_size <= 2048:
            raise ValueError(f"image_size must be an int in [64, 2048], got {image_size!r}.")
        if backend == "thor":
            require_thor()  # fail at once, before any data look-up
        import_alfworld()
        self.task_types = resolve_task_types(task_types)
        self.split = split
        self.backend_name = backend
        self.render_mode = render_mode
        self.games_root = resolve_games_root(data_path, split)
        self.game_files = collect_game_files(self.games_root, self.task_types)
        if not self.game_files:
            raise ValueError(
                f"No playable ALFWorld games of types {list(self.task_types)} under {self.games_root!r}."
            )
        if backend == "thor":
            self.image_size = 300
            self._backend: TextBackend | ThorBackend = ThorBackend(split, self.task_types, self.games_root,
                                                                    MAX_EPISODE_STEPS)
        else:
            self.image_size = image_size
            self._backend = TextBackend(image_size=image_size)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8),
                "text": spaces.Text(max_length=MAX_TEXT_LENGTH, min_length=0, charset=TEXT_CHARSET),
                "admissible_commands": spaces.Text(max_length=MAX_TEXT_LENGTH, min_length=0, charset=TEXT_CHARSET),
            }
        )
        self.action_space = spaces.Discrete(MAX_ADMISSIBLE_COMMANDS)
        self._state: BackendState | None = None
        self._game_file = ""
        self._image: np.ndarray | None = None

    # ---------------------------------------------------------------- protocol (docs/CONTRACTS.md)
    def legal_actions(self) -> list[str]:
        """The admissible commands now; ``step(i)`` executes ``legal_actions()[i]``."""
        self._require_reset()
        return list(self._state.admissible_commands)

    def describe(self) -> str:
        """The text observation: the engine's last feedback and the task sentence."""
        self._require_reset()
        feedback = self._state.feedback.strip()
        task = f"Your task is to: {self._backend.task_sentence}."
        return _ascii_text(feedback if task in feedback else f"{feedback}\n\n{task}")

    def expert_action(self) -> int:
        """Index (into ``legal_actions()``) of alfworld's hand-coded expert's next command
        ("look" when the expert has no suggestion)."""
        commands = self.legal_actions()
        command = self._backend.expert_command()
        return commands.index(command) if command in commands else commands.index("look")

    @property
    def action_names(self) -> tuple[str, ...]:
        """The text of every action id now (the admissible commands; they change each step)."""
        return tuple(self.legal_actions()) if self._state is not None else ()

    # ---------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        game = check_reset_options("ALFWorldEnv", options, known=("game",)).get("game")
        if game is not None and (isinstance(game, (bool, np.bool_)) or not isinstance(game, (int, np.integer, str))):
            raise TypeError(
                f"options['game'] must be an int index into game_files or a game.tw-pddl path (str), "
                f"got {game!r} ({type(game).__name__})."
            )
        if isinstance(game, (int, np.integer)) and not 0 <= int(game) < len(self.game_files):
            raise ValueError(f"options['game'] index {game} out of range [0, {len(self.game_files)}).")
        if isinstance(game, str) and not os.path.isfile(game):
            raise ValueError(f"options['game'] must be an index or a game.tw-pddl path, got {game!r}.")
        super().reset(seed=seed)  # only once the options are known to be good: a refused reset changes nothing
        if game is None:
            game_file = self.game_files[int(self.np_random.integers(len(self.game_files)))]
        elif isinstance(game, str):
            game_file = game
        else:
            game_file = self.game_files[int(game)]
        self._game_file = game_file
        self._state = self._backend.reset(game_file, seed=int(self.np_random.integers(2**31)))
        self._image = None
        return self._observation(), self._info(command="", admissible=True)

    def step(self, action: int | str):
        self._require_reset()
        if self._state.won:
            raise episode_over_error("ALFWorldEnv", started=True)
        commands = self._state.admissible_commands
        if isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer):
            action = action.item()
        if isinstance(action, str):
            command = " ".join(action.lower().split())  # commands are lower case, single-spaced
            admissible = command in commands
        elif isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_)):
            index = int(action)
            admissible = 0 <= index < len(commands)
            command = commands[index] if admissible else f"<action {index}>"
        else:
            raise TypeError(
                f"ALFWorldEnv.step expects an int index into legal_actions() (Python or numpy integer) "
                f"or an admissible command (str), got {action!r} ({type(action).__name__})."
            )
        if admissible:
            self._state = self._backend.step(command)
            self._image = None
        else:
            self._state = BackendState("Nothing happens.", commands, self._state.won,
                                       self._state.goal_condition_success_rate)
        reward = alfworld_reward(self._state.won, self._state.goal_condition_success_rate, admissible)
        terminated = self._state.won
        return self._observation(), reward, terminated, False, self._info(command=command, admissible=admissible)

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the observation's image (a copy). Without a render_mode: a warning and None,
        as the card games do (the image is in every observation's ``"image"`` anyway)."""
        if self.render_mode != "rgb_array":
            gym.logger.warn(
                "render() was called without a render_mode; pass render_mode='rgb_array' to gymnasium.make "
                "(every observation holds the image too, under 'image')"
            )
            return None
        self._require_reset()
        return self._current_image().copy()

    def close(self) -> None:
        self._backend.close()

    # ---------------------------------------------------------------- helpers
    def _require_reset(self) -> None:
        if self._state is None:
            raise RuntimeError("Call reset() before using the ALFWorld environment.")

    def _current_image(self) -> np.ndarray:
        if self._image is None:
            self._image = self._backend.image()
        return self._image

    def _observation(self) -> dict[str, Any]:
        return {
            "image": self._current_image().copy(),
            "text": self.describe(),
            "admissible_commands": _ascii_text("\n".join(self._state.admissible_commands)),
        }

    def _info(self, command: str, admissible: bool) -> dict[str, Any]:
        task = self._backend.task
        return {
            "success": bool(self._state.won),
            "won": bool(self._state.won),
            "admissible": admissible,
            "command": command,
            "admissible_commands": list(self._state.admissible_commands),
            "goal_condition_success_rate": float(self._state.goal_condition_success_rate),
            "task": self._backend.task_sentence,
            "task_type": task.task_type if task is not None else "",
            "gamefile": self._game_file,
            "expert_command": self._backend.expert_command(),
        }
