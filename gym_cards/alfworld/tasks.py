"""ALFWorld's six task types and their goal conditions, computed from world facts.

Pure functions over facts (tuples such as ``("inreceptacle", "apple 1", "fridge 1")``, see
:data:`gym_cards.alfworld.engine.Fact`); no alfworld import. The goal-condition counts follow
ALFRED's THOR task definitions (``alfworld/env/tasks.py``), which the text engine does not
provide: the share of a task's conditions that hold is the ``goal_condition_success_rate`` of
RL4VLM's reward.
"""

from __future__ import annotations

from collections.abc import Iterable

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""The six ALFWorld task types, in alfworld's numbering order (1..6)."""

TASK_TYPE_SHORT_NAMES: dict[str, str] = {
    "pick": "pick_and_place_simple",
    "look": "look_at_obj_in_light",
    "clean": "pick_clean_then_place_in_recep",
    "heat": "pick_heat_then_place_in_recep",
    "cool": "pick_cool_then_place_in_recep",
    "pick_two": "pick_two_obj_and_place",
}
"""Short aliases accepted wherever task types are given."""

# The state predicate a task checks on the placed object, per task type.
_STATE_PREDICATE: dict[str, str] = {
    "pick_clean_then_place_in_recep": "isclean",
    "pick_heat_then_place_in_recep": "ishot",
    "pick_cool_then_place_in_recep": "iscool",
}

Facts = Iterable[tuple[str, ...]]


def resolve_task_types(task_types: Iterable[str | int] | str | None) -> tuple[str, ...]:
    """Normalise a task-type selection to full names, in :data:`TASK_TYPES` order.

    Accepts full names, the short aliases of :data:`TASK_TYPE_SHORT_NAMES`, alfworld's numbers
    1..6, ``"all"`` or None (all six).

    Raises:
        ValueError: an unknown task type, naming the valid ones.
    """
    if task_types is None or task_types == "all":
        return TASK_TYPES
    if isinstance(task_types, (str, int)):
        task_types = [task_types]
    chosen: set[str] = set()
    for item in task_types:
        if isinstance(item, int) and 1 <= item <= len(TASK_TYPES):
            chosen.add(TASK_TYPES[item - 1])
        elif item in TASK_TYPES:
            chosen.add(str(item))
        elif item in TASK_TYPE_SHORT_NAMES:
            chosen.add(TASK_TYPE_SHORT_NAMES[str(item)])
        else:
            valid = ", ".join(list(TASK_TYPES) + list(TASK_TYPE_SHORT_NAMES))
            raise ValueError(f"Unknown ALFWorld task type {item!r}; choose from: {valid} (or 1..6).")
    if not chosen:
        raise ValueError("task_types is empty; give at least one ALFWorld task type.")
    return tuple(t for t in TASK_TYPES if t in chosen)


def _typed(facts: Facts, predicate: str, type_name: str) -> set[str]:
    """Entities whose ``objecttype``/``receptacletype`` is ``<type_name>Type`` (case-insensitive)."""
    wanted = (type_name + "Type").lower()
    return {f[1] for f in facts if f[0] == predicate and f[2].lower() == wanted}


def goal_conditions_met(
    task_type: str,
    facts: Facts,
    object_target: str,
    parent_target: str = "",
    toggle_target: str = "",
) -> tuple[int, int]:
    """Count (satisfied, total) goal conditions of a task in a world state.

    Conditions, after ALFRED's THOR tasks:
      - pick_and_place_simple: a target object is in a target receptacle (1).
      - pick_two_obj_and_place: ``min(max_r |target objects in r|, 2)`` of 2.
      - look_at_obj_in_light: holding a target object (1); a lamp of the toggle type is on
        (``istoggled``) at the agent's location (1).
      - clean / heat / cool: a target object is in a target receptacle (1); some target object
        is clean / hot / cool (1); one object is both (1).
    """
    facts = frozenset(facts)
    objects = _typed(facts, "objecttype", object_target)
    in_receptacle = {(f[1], f[2]) for f in facts if f[0] == "inreceptacle"}

    if task_type == "look_at_obj_in_light":
        held = {f[2] for f in facts if f[0] == "holds"}
        lamps = _typed(facts, "objecttype", toggle_target)
        agent_locations = {f[2] for f in facts if f[0] == "atlocation"}
        receptacles_here = {f[1] for f in facts if f[0] == "receptacleatlocation" and f[2] in agent_locations}
        lamp_on_here = any(
            ("istoggled", lamp) in facts and any((lamp, r) in in_receptacle for r in receptacles_here)
            for lamp in lamps
        )
        return int(bool(held & objects)) + int(lamp_on_here), 2

    receptacles = _typed(facts, "receptacletype", parent_target)
    placed = {o for (o, r) in in_receptacle if o in objects and r in receptacles}

    if task_type == "pick_and_place_simple":
        return int(bool(placed)), 1
    if task_type == "pick_two_obj_and_place":
        most = max((sum((o, r) in in_receptacle for o in objects) for r in receptacles), default=0)
        return min(most, 2), 2
    if task_type in _STATE_PREDICATE:
        predicate = _STATE_PREDICATE[task_type]
        changed = {o for o in objects if (predicate, o) in facts}
        return int(bool(placed)) + int(bool(changed)) + int(bool(placed & changed)), 3
    raise ValueError(f"Unknown ALFWorld task type {task_type!r}; choose from: {', '.join(TASK_TYPES)}.")


def goal_condition_success_rate(
    task_type: str, facts: Facts, object_target: str, parent_target: str = "", toggle_target: str = ""
) -> float:
    """Share of the task's goal conditions that hold: ``satisfied / total`` in [0, 1]."""
    satisfied, total = goal_conditions_met(task_type, facts, object_target, parent_target, toggle_target)
    return satisfied / total


def alfworld_reward(won: bool, goal_condition_rate: float, admissible: bool) -> float:
    """RL4VLM's ALFWorld reward: ``50 * won + goal_condition_success_rate - 1[not admissible]``."""
    return 50.0 * float(won) + goal_condition_rate - (0.0 if admissible else 1.0)
