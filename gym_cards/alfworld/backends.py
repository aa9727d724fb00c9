"""The two ways an ALFWorld game is played: the text engine drawn offline, or AI2-THOR.

Both give a :class:`BackendState` after reset and after each admissible command, plus an RGB
image and the expert's next command. ``ALFWorldEnv`` turns that into Gymnasium observations and
RL4VLM's reward.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from gym_cards.alfworld.engine import (
    GameTask,
    HandCodedExpert,
    TextGame,
    facts_from_state,
    import_alfworld,
)
from gym_cards.alfworld.render import render_world, world_view_from_facts
from gym_cards.alfworld.tasks import TASK_TYPES, goal_condition_success_rate


@dataclass(frozen=True)
class BackendState:
    """What the engine reports after reset or a command."""

    feedback: str
    admissible_commands: tuple[str, ...]
    won: bool
    goal_condition_success_rate: float


def task_sentence(game_file: str) -> str:
    """The task sentence a game's grammar carries ("put a hot plate in countertop")."""
    with open(game_file) as handle:
        grammar = json.load(handle)["grammar"]
    marker = "Your task is to: "
    start = grammar.index(marker) + len(marker)
    sentence = grammar[start:grammar.index('"', start)].rstrip(".")
    if sentence == "UNKNOWN GOAL":  # grammar without the task filled in: use alfworld's template
        from alfworld.gen import goal_library

        with open(os.path.join(os.path.dirname(game_file), "traj_data.json")) as handle:
            traj = json.load(handle)
        params = traj["pddl_params"]
        template = goal_library.gdict[traj["task_type"]]["templates"][0]
        sentence = template.format(obj=params["object_target"].lower(), recep=params["parent_target"].lower(),
                                   toggle=params["toggle_target"].lower(), mrecep=params["mrecep_target"].lower())
    return sentence


class TextBackend:
    """textworld's PDDL engine; the image is drawn from the facts by :mod:`render`.

    Loaded games are kept (up to ``cache_size``) so that a reset on a game seen before skips
    re-parsing the domain and grammar.
    """

    def __init__(self, image_size: int = 300, cache_size: int = 16) -> None:
        import_alfworld()
        self.image_size = image_size
        self._games: OrderedDict[str, TextGame] = OrderedDict()
        self._cache_size = cache_size
        self._game: TextGame | None = None
        self._state: Any = None
        self._expert = HandCodedExpert()
        self.task_sentence = ""

    def _load(self, game_file: str) -> TextGame:
        game = self._games.pop(game_file, None) or TextGame(game_file)
        self._games[game_file] = game
        while len(self._games) > self._cache_size:
            self._games.popitem(last=False)
        return game

    @property
    def task(self) -> GameTask:
        assert self._game is not None
        return self._game.task

    @property
    def facts(self) -> frozenset[tuple[str, ...]]:
        return facts_from_state(self._state)

    def _report(self) -> BackendState:
        task = self.task
        rate = goal_condition_success_rate(
            task.task_type, self.facts, task.object_target, task.parent_target, task.toggle_target
        )
        return BackendState(
            feedback=self._state["feedback"],
            admissible_commands=tuple(self._state["admissible_commands"]),
            won=bool(self._state["won"]),
            goal_condition_success_rate=rate,
        )

    def reset(self, game_file: str, seed: int) -> BackendState:
        self._game = self._load(game_file)
        self.task_sentence = task_sentence(game_file)
        self._state = self._game.reset()
        self._expert.observe_reset(game_file, self._state, seed)
        return self._report()

    def step(self, command: str) -> BackendState:
        assert self._game is not None
        self._state = self._game.step(command)
        self._expert.observe_step(self._state, command)
        return self._report()

    def image(self) -> np.ndarray:
        return render_world(world_view_from_facts(self.facts), self.task_sentence, self.image_size)

    def expert_command(self) -> str:
        return self._expert.next_command

    def close(self) -> None:
        self._games.clear()


THOR_FRAME_SIZE = 300


def missing_thor_requirements() -> list[str]:
    """What the THOR backend needs and this machine lacks (empty when all is present)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("ai2thor") is None:
        missing.append("the ai2thor package (pip install ai2thor==2.1.0, as alfworld's [full] extra pins)")
    if importlib.util.find_spec("cv2") is None:
        missing.append("OpenCV (pip install opencv-python)")
    if importlib.util.find_spec("torchvision") is None:
        missing.append("torchvision (alfworld's THOR env imports its Mask R-CNN detector module)")
    if not os.environ.get("DISPLAY"):
        missing.append("an X display (set DISPLAY, e.g. run `Xvfb :0 &` and `export DISPLAY=:0`)")
    if shutil.which("Xorg") is None and shutil.which("Xvfb") is None and not os.environ.get("DISPLAY"):
        missing.append("an X server binary (Xorg or Xvfb)")
    return missing


def require_thor() -> None:
    """Raise a RuntimeError naming everything the THOR backend lacks here, if anything."""
    missing = missing_thor_requirements()
    if missing:
        raise RuntimeError(
            "backend='thor' needs AI2-THOR with a display; missing: " + "; ".join(missing)
            + ". AI2-THOR also downloads its Unity build on first start and plays only official "
            "ALFWorld games (traj_data.json with scene object poses). Use backend='text' for the "
            "offline renderer."
        )


class ThorBackend:
    """alfworld's ``AlfredThorEnv`` (AI2-THOR, 300x300 frames) playing one chosen game at a time.

    Needs ai2thor, OpenCV, an X display and official ALFWorld games; not exercised on machines
    without them (construction fails at once with :func:`require_thor`'s message).
    """

    def __init__(self, split: str, task_types: tuple[str, ...], data_root: str, max_steps: int) -> None:
        require_thor()
        import_alfworld()
        from alfworld.agents.environment.alfred_thor_env import AlfredThorEnv

        train_eval = {"train": "train", "eval": "eval_out_of_distribution",
                      "eval_in_distribution": "eval_in_distribution"}[split]
        config = {
            "dataset": {"data_path": data_root, "eval_id_data_path": data_root, "eval_ood_data_path": data_root,
                        "num_train_games": -1, "num_eval_games": -1},
            "env": {"type": "AlfredThorEnv", "task_types": [TASK_TYPES.index(t) + 1 for t in task_types],
                    "goal_desc_human_anns_prob": 0.0, "expert_type": "handcoded",
                    "thor": {"screen_height": THOR_FRAME_SIZE, "screen_width": THOR_FRAME_SIZE,
                             "smooth_nav": False, "save_frames_to_disk": False, "save_frames_path": ""}},
            "controller": {"type": "oracle", "debug": False, "load_receps": True},
            "mask_rcnn": {"pretrained_model_path": ""},
            "general": {"training_method": "dagger"},
            "dagger": {"training": {"max_nb_steps_per_episode": max_steps}},
        }
        # The expert plan is computed only for train_eval == "train"; we want it in every split.
        self._env = AlfredThorEnv(config, "train" if train_eval == "train" else train_eval).init_env(batch_size=1)
        for thread in self._env.envs:
            thread.train_eval = "train"
        self._infos: dict[str, Any] = {}
        self._feedback = ""
        self.task_sentence = ""
        self.task: GameTask | None = None

    def _report(self, feedback: str, infos: dict[str, Any]) -> BackendState:
        self._feedback, self._infos = feedback, infos
        return BackendState(
            feedback=feedback,
            admissible_commands=tuple(infos["admissible_commands"][0]),
            won=bool(infos["won"][0]),
            goal_condition_success_rate=float(infos["goal_condition_success_rate"][0]),
        )

    def reset(self, game_file: str, seed: int) -> BackendState:
        traj_path = os.path.join(os.path.dirname(game_file), "traj_data.json")
        with open(traj_path) as handle:
            traj = json.load(handle)
        if "object_poses" not in traj.get("scene", {}):
            raise ValueError(f"{traj_path} has no THOR scene (object poses); backend='thor' plays only "
                             "official ALFWorld games. Use backend='text' for generated games.")
        self.task = GameTask.from_traj_data(traj)
        self.task_sentence = task_sentence(game_file)
        self._env.json_file_list = [traj_path]  # AlfredThorEnv samples its next game from this list
        obs, infos = self._env.reset()
        return self._report(obs[0], infos)

    def step(self, command: str) -> BackendState:
        obs, _, _dones, infos = self._env.step([command])
        return self._report(obs[0], infos)

    def image(self) -> np.ndarray:
        # AlfredThorEnv reverses THOR's RGB frame to BGR (for OpenCV); reverse it back.
        return np.ascontiguousarray(self._env.get_frames()[0][:, :, ::-1], dtype=np.uint8)

    def expert_command(self) -> str:
        plan = self._infos.get("extra.expert_plan", [[]])[0]
        return plan[0] if plan else "look"

    def close(self) -> None:
        self._env.close()
