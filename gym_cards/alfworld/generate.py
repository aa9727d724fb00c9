"""Write ALFWorld game folders from the floor-plan layouts shipped with alfworld.

Each game is a folder ``<task_type>-<Object>-None-<Receptacle>-<scene>/trial_S<seed>_<k>/``
holding ``game.tw-pddl`` (alfworld's PDDL domain, its grammar with the task sentence filled in,
our PDDL problem, ``"solvable": true`` and the expert's ``walkthrough``) and ``traj_data.json``
(``task_type``, ``pddl_params``, scene, the task sentence). That is the layout of the official
``json_2.1.1`` release, so alfworld's own ``AlfredTWEnv`` loads the games unchanged. Every game is
played by alfworld's hand-coded expert (or, with ``--expert planner|both``, by fast-downward in
a child process with a time-out) before it is kept; games it does not win within ``--max-steps``
are dropped and counted.

Command line (also ``gym-cards alfworld-generate``)::

    python -m gym_cards.alfworld.generate --out DIR --games 12 --seed 0 --split all
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from gym_cards.alfworld.engine import TextGame, import_alfworld, play_expert
from gym_cards.alfworld.planner import planner_plan
from gym_cards.alfworld.scenes import (
    LAMP_RECEPTACLE_TYPES,
    SceneLayout,
    load_scene,
    room_type,
    split_scenes,
)
from gym_cards.alfworld.tasks import TASK_TYPES, resolve_task_types

SPLIT_DIRS: dict[str, str] = {"train": "train", "eval": "valid_unseen"}
"""Folder (under ``json_2.1.1``) each split is written to, as in the official release."""

DEFAULT_MAX_STEPS = 50
"""Step limit of an episode (ALFWorld's evaluation budget); the expert must win within it."""

_HEAT_COOL_CLEAN = {
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
}

# Types the PDDL domain names as constants; every problem must declare them.
_DOMAIN_OTYPES = ("KnifeType", "ButterKnifeType")
_DOMAIN_RTYPES = ("SinkBasinType", "MicrowaveType", "FridgeType")


def pddl_name(alfred_id: str) -> str:
    """Mangle an ALFRED id into a PDDL name the way alfworld does (``Apple|1`` -> ``Apple_bar_1``)."""
    replacements = {"-": "_minus_", "#": "-", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}
    return "".join(replacements.get(ch, ch) for ch in alfred_id)


@dataclass
class GameSpec:
    """A sampled game before it is written: the task and where every object starts."""

    scene: int
    task_type: str
    object_target: str
    parent_target: str
    toggle_target: str
    task_sentence: str
    placements: list[tuple[str, str, str]] = field(default_factory=list)
    """(object id, object type, receptacle id) for every object."""


def _constants():
    import_alfworld()
    from alfworld.gen import constants

    return constants


def _can_contain(receptacle_type: str, object_type: str) -> bool:
    return object_type in _constants().VAL_RECEPTACLE_OBJECTS.get(receptacle_type, ())


def _task_candidates(scene: SceneLayout, task_type: str) -> list[tuple[str, str, str]]:
    """Every (object type, parent type, toggle type) the task could use in this scene."""
    constants = _constants()
    if room_type(scene.number) not in constants.GOALS_VALID[task_type]:
        return []  # ALFRED poses e.g. heating only in kitchens
    receptacle_types = scene.receptacle_types
    candidates = []
    if task_type == "look_at_obj_in_light":
        if not any(t in receptacle_types for t in LAMP_RECEPTACLE_TYPES):
            return []
        for lamp in scene.lamp_types:
            for obj in scene.object_types:
                candidates.append((obj, "", lamp))
        return candidates
    for obj in scene.object_types:
        if task_type in _HEAT_COOL_CLEAN:
            capability, appliance = _HEAT_COOL_CLEAN[task_type]
            if obj not in constants.VAL_ACTION_OBJECTS[capability] or appliance not in receptacle_types:
                continue
        holders = [t for t in receptacle_types if _can_contain(t, obj)]
        for parent in sorted(holders):
            # The object must start somewhere other than a goal receptacle.
            if any(t != parent for t in holders):
                candidates.append((obj, parent, ""))
    return candidates


def sample_game(scene: SceneLayout, task_type: str, rng: np.random.Generator) -> GameSpec | None:
    """Sample a task and an object placement in a scene; None when the scene cannot host the task."""
    from alfworld.gen import goal_library

    candidates = _task_candidates(scene, task_type)
    if not candidates:
        return None
    obj, parent, toggle = candidates[int(rng.integers(len(candidates)))]
    template = goal_library.gdict[task_type]["templates"][int(rng.integers(2))]
    sentence = template.format(obj=obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep="")
    spec = GameSpec(scene.number, task_type, obj, parent, toggle, sentence)

    def place(object_type: str, count: int, forbidden_type: str = "") -> None:
        holders = [r for r in scene.receptacles if _can_contain(r.type_name, object_type) and r.type_name != forbidden_type]
        for _ in range(count):
            k = sum(1 for p in spec.placements if p[1] == object_type) + 1
            receptacle = holders[int(rng.integers(len(holders)))]
            spec.placements.append((f"{object_type}|{k}", object_type, receptacle.alfred_id))

    low = 2 if task_type == "pick_two_obj_and_place" else 1
    place(obj, int(rng.integers(low, 4)), forbidden_type=parent)
    others = [t for t in scene.object_types if t != obj]
    n_distractors = min(len(others), int(rng.integers(6, 13)))
    for distractor in sorted(rng.choice(others, size=n_distractors, replace=False).tolist()):
        forbidden = parent if task_type != "look_at_obj_in_light" else ""
        if any(_can_contain(r.type_name, distractor) and r.type_name != forbidden for r in scene.receptacles):
            place(distractor, int(rng.integers(1, 3)), forbidden_type="")
    if toggle:
        stands = [r for t in LAMP_RECEPTACLE_TYPES for r in scene.receptacles if r.type_name == t]
        stand = stands[int(rng.integers(len(stands)))] if toggle == "DeskLamp" else stands[0]
        spec.placements.append((f"{toggle}|1", toggle, stand.alfred_id))
    return spec


def pddl_problem(spec: GameSpec, scene: SceneLayout, problem_name: str) -> str:
    """The PDDL problem text of a game (domain ``alfred``)."""
    from alfworld.gen import goal_library

    constants = _constants()
    receptacles = list(scene.receptacles)
    location = {r.alfred_id: f"loc|{i + 1}" for i, r in enumerate(receptacles)}
    object_types = sorted({p[1] for p in spec.placements} | {spec.object_target})
    receptacle_types = sorted({r.type_name for r in receptacles})
    otypes = sorted({f"{t}Type" for t in object_types} | set(_DOMAIN_OTYPES))
    rtypes = sorted({f"{t}Type" for t in receptacle_types} | set(_DOMAIN_RTYPES))

    objects = ["agent1 - agent"]
    objects += [f"{pddl_name(loc)} - location" for loc in ["loc|start", *location.values()]]
    objects += [f"{t} - otype" for t in otypes] + [f"{t} - rtype" for t in rtypes]
    objects += [f"{pddl_name(p[0])} - object" for p in spec.placements]
    objects += [f"{pddl_name(r.alfred_id)} - receptacle" for r in receptacles]

    init = [f"(atLocation agent1 {pddl_name('loc|start')})"]
    for r in receptacles:
        name = pddl_name(r.alfred_id)
        init.append(f"(receptacleType {name} {r.type_name}Type)")
        init.append(f"(receptacleAtLocation {name} {pddl_name(location[r.alfred_id])})")
        if r.type_name in constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {name})")
    for r_type in receptacle_types:
        for o_type in object_types:
            if _can_contain(r_type, o_type):
                init.append(f"(canContain {r_type}Type {o_type}Type)")
    actions = constants.VAL_ACTION_OBJECTS
    for object_id, o_type, receptacle_id in spec.placements:
        name = pddl_name(object_id)
        init.append(f"(objectType {name} {o_type}Type)")
        init.append(f"(inReceptacle {name} {pddl_name(receptacle_id)})")
        init.append(f"(objectAtLocation {name} {pddl_name(location[receptacle_id])})")
        if o_type in actions["Toggleable"]:
            if o_type == spec.toggle_target:
                init.append(f"(toggleable {name})")
            continue  # lamps stay where they are
        init.append(f"(pickupable {name})")
        for capability, predicate in (("Cleanable", "cleanable"), ("Heatable", "heatable"),
                                      ("Coolable", "coolable"), ("Sliceable", "sliceable")):
            if o_type in actions[capability]:
                init.append(f"({predicate} {name})")
        if o_type in constants.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {name})")

    goal = goal_library.gdict[spec.task_type]["pddl"].format(
        obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target, mrecep=""
    ).replace("#", "-")
    return (
        f"(define (problem {problem_name})\n(:domain alfred)\n(:objects\n    "
        + "\n    ".join(objects)
        + "\n)\n(:init\n    "
        + "\n    ".join(init)
        + "\n)\n"
        + goal.strip()
        + "\n"
    )


def traj_data(spec: GameSpec, task_id: str) -> dict:
    """The ``traj_data.json`` content read by alfworld's grammar, loader and experts."""
    return {
        "task_id": task_id,
        "task_type": spec.task_type,
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {"floor_plan": f"FloorPlan{spec.scene}", "scene_num": spec.scene},
        "turk_annotations": {"anns": [{"task_desc": spec.task_sentence}]},
        "generator": "gym_cards.alfworld.generate",
    }


def game_folder_name(spec: GameSpec) -> str:
    """``<task_type>-<Object>-None-<Receptacle or lamp>-<scene>``, as in the official release."""
    last = spec.toggle_target if spec.task_type == "look_at_obj_in_light" else spec.parent_target
    return f"{spec.task_type}-{spec.object_target}-None-{last}-{spec.scene}"


def write_game(spec: GameSpec, folder: str, task_id: str) -> str:
    """Write ``game.tw-pddl`` and ``traj_data.json`` into ``folder``; return the game file path."""
    alfworld = import_alfworld()
    scene = load_scene(spec.scene)
    with open(alfworld.info.ALFRED_PDDL_PATH) as handle:
        domain = handle.read()
    with open(alfworld.info.ALFRED_TWL2_PATH) as handle:
        grammar = handle.read().replace("UNKNOWN GOAL", spec.task_sentence)
    os.makedirs(folder, exist_ok=True)
    game = {
        "pddl_domain": domain,
        "grammar": grammar,
        "pddl_problem": pddl_problem(spec, scene, task_id.replace("/", "_").replace("-", "_")),
        "solvable": True,
    }
    game_file = os.path.join(folder, "game.tw-pddl")
    with open(game_file, "w") as handle:
        json.dump(game, handle)
    with open(os.path.join(folder, "traj_data.json"), "w") as handle:
        json.dump(traj_data(spec, task_id), handle, indent=1)
    return game_file


EXPERTS = ("handcoded", "planner", "both")
"""Which expert must win a game before it is kept (``both``: each on its own)."""


def replay_wins(game_file: str, commands: list[str]) -> bool:
    """True when playing ``commands`` in order (each one admissible) wins the game."""
    game = TextGame(game_file)
    state = game.reset()
    for command in commands:
        if command not in state["admissible_commands"]:
            return False
        state = game.step(command)
    return bool(state["won"])


def solving_walkthrough(game_file: str, expert: str, max_steps: int, planner_timeout_s: float) -> list[str] | None:
    """The commands with which the chosen expert wins within ``max_steps``, or None.

    ``handcoded``: alfworld's hand-coded expert, in this process (fast). ``planner``:
    fast-downward in a child process killed after ``planner_timeout_s``; its plan is replayed to
    check it. ``both``: both must win; the hand-coded expert's commands are returned.
    """
    if expert not in EXPERTS:
        raise ValueError(f"Unknown expert {expert!r}; choose one of {EXPERTS}.")
    walkthrough = None
    if expert in ("handcoded", "both"):
        won, commands = play_expert(game_file, max_steps=max_steps, seed=0)
        if not won:
            return None
        walkthrough = commands
    if expert in ("planner", "both"):
        plan = planner_plan(game_file, planner_timeout_s)
        if plan is None or len(plan) > max_steps or not replay_wins(game_file, plan):
            return None
        walkthrough = walkthrough or plan
    return walkthrough


@dataclass
class GenerationReport:
    kept: Counter = field(default_factory=Counter)
    """Games written, per (split, task type)."""
    expert_failed: Counter = field(default_factory=Counter)
    """Games dropped because the expert did not win within the step limit, per task type."""
    no_candidate: int = 0
    """Samples skipped because the scene could not host the task type."""
    game_files: list[str] = field(default_factory=list)


def generate_games(
    out_dir: str,
    games_per_split: int,
    seed: int,
    splits: tuple[str, ...] = ("train", "eval"),
    task_types: tuple[str, ...] = TASK_TYPES,
    max_steps: int = DEFAULT_MAX_STEPS,
    progress: bool = True,
    expert: str = "handcoded",
    planner_timeout_s: float = 60.0,
) -> GenerationReport:
    """Generate ``games_per_split`` expert-checked games per split into ``out_dir/json_2.1.1``.

    Task types are used in turn, scenes drawn at random from the split's scenes that can host the
    task type (ALFRED's room types per task, the needed appliances); all draws come
    from ``numpy.random.default_rng(seed)``, so a seed always writes the same games.
    """
    from tqdm import tqdm

    if games_per_split < 1:
        raise ValueError(f"games must be >= 1, got {games_per_split}.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    if expert not in EXPERTS:
        raise ValueError(f"Unknown expert {expert!r}; choose one of {EXPERTS}.")
    report = GenerationReport()
    rng = np.random.default_rng(seed)
    for split in splits:
        scenes = split_scenes(split)
        split_root = os.path.join(out_dir, "json_2.1.1", SPLIT_DIRS[split])
        bar = tqdm(total=games_per_split, desc=f"alfworld games ({split})", disable=not progress)
        attempts = 0
        kept_in_split = 0
        while kept_in_split < games_per_split:
            attempts += 1
            if attempts > 50 * games_per_split:
                raise RuntimeError(
                    f"Gave up after {attempts - 1} attempts for split {split!r}: "
                    f"{kept_in_split} games kept; try other task types or a larger --max-steps."
                )
            task_type = task_types[kept_in_split % len(task_types)]
            hosts = [n for n in scenes if _task_candidates(load_scene(n), task_type)]
            if not hosts:
                raise RuntimeError(f"No {split} scene can host {task_type}.")
            scene = load_scene(int(hosts[int(rng.integers(len(hosts)))]))
            spec = sample_game(scene, task_type, rng)
            if spec is None:
                report.no_candidate += 1
                continue
            task_id = f"{game_folder_name(spec)}/trial_S{seed}_{attempts}"
            with tempfile.TemporaryDirectory(prefix="alfworld_gen_") as staging:
                game_file = write_game(spec, os.path.join(staging, task_id), task_id)
                commands = solving_walkthrough(game_file, expert, max_steps, planner_timeout_s)
                if commands is None:
                    report.expert_failed[task_type] += 1
                    continue
                with open(game_file) as handle:
                    game = json.load(handle)
                game["walkthrough"] = commands
                with open(game_file, "w") as handle:
                    json.dump(game, handle)
                final = os.path.join(split_root, task_id)
                if os.path.exists(final):
                    shutil.rmtree(final)
                shutil.copytree(os.path.join(staging, task_id), final)
            report.kept[(split, task_type)] += 1
            report.game_files.append(os.path.join(final, "game.tw-pddl"))
            kept_in_split += 1
            bar.update(1)
        bar.close()
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gym-cards alfworld-generate",
        description="Generate expert-checked ALFWorld games (json_2.1.1 layout) from alfworld's floor plans.",
    )
    parser.add_argument("--out", required=True, help="Output folder; games go to OUT/json_2.1.1/<split>/.")
    parser.add_argument("--games", type=int, default=12, help="Games to keep per split (default 12).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    parser.add_argument("--split", choices=["train", "eval", "all"], default="all",
                        help="train: ALFRED train scenes; eval: held-out scenes (valid_unseen); all: both.")
    parser.add_argument("--task-types", nargs="+", default=["all"],
                        help="Task types: full names, pick/look/clean/heat/cool/pick_two, 1..6, or all.")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                        help=f"The expert must win within this many steps (default {DEFAULT_MAX_STEPS}).")
    parser.add_argument("--expert", choices=EXPERTS, default="handcoded",
                        help="Expert that must win each game: alfworld's hand-coded expert (default, fast), "
                             "the fast-downward planner (child process, see --planner-timeout), or both.")
    parser.add_argument("--planner-timeout", type=float, default=60.0,
                        help="Seconds the planner may take per game before the game is dropped (default 60).")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gym-cards alfworld-generate``; returns the process exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        task_types = resolve_task_types(
            [int(t) if t.isdigit() else t for t in args.task_types] if args.task_types != ["all"] else None
        )
        splits = ("train", "eval") if args.split == "all" else (args.split,)
        report = generate_games(args.out, args.games, args.seed, splits, task_types, args.max_steps,
                                progress=not args.quiet, expert=args.expert,
                                planner_timeout_s=args.planner_timeout)
    except (ValueError, RuntimeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for (split, task_type), count in sorted(report.kept.items()):
        print(f"kept  {split:5s} {task_type:32s} {count}")
    dropped = sum(report.expert_failed.values())
    print(f"kept {sum(report.kept.values())} games; dropped {dropped} the {args.expert} expert could not win "
          f"within {args.max_steps} steps {dict(report.expert_failed)}; "
          f"{report.no_candidate} samples skipped (scene cannot host the task).")
    print(f"games written under {os.path.join(args.out, 'json_2.1.1')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
