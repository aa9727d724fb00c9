"""ALFRED floor-plan layouts shipped inside the alfworld package.

``alfworld/gen/layouts/FloorPlan<N>-openable.json`` maps each receptacle id of scene N (for
example ``"Cabinet|+00.68|+00.50|-02.20"`` or ``"Sink|-01.90|+00.97|-01.50|SinkBasin"``) to the
agent pose from which it is used; ``FloorPlan<N>-objects.json`` lists the object types present.
Scenes are split as ALFRED does: train scenes 7-30 of each room type, held-out scenes 1-6.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache

from gym_cards.alfworld.engine import import_alfworld

# Receptacles that ALFWorld games contain but the openable.json files do not list (no pose is
# recorded for them); we add one of each when the scene's object list names the type.
EXTRA_RECEPTACLE_TYPES: tuple[str, ...] = ("CoffeeMachine", "Toaster", "StoveBurner", "LaundryHamper")

# Where a desk or floor lamp may stand, most plausible first.
LAMP_RECEPTACLE_TYPES: tuple[str, ...] = ("Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "TVStand", "CounterTop")

LAMP_TYPES: tuple[str, ...] = ("DeskLamp", "FloorLamp")


@dataclass(frozen=True)
class Receptacle:
    """A static receptacle of a scene: its ALFRED id and its type (``"SinkBasin"`` for sinks)."""

    alfred_id: str
    type_name: str


@dataclass(frozen=True)
class SceneLayout:
    """What a floor plan offers: receptacles and the types of movable objects present."""

    number: int
    receptacles: tuple[Receptacle, ...]
    object_types: tuple[str, ...]
    lamp_types: tuple[str, ...]

    @property
    def receptacle_types(self) -> frozenset[str]:
        return frozenset(r.type_name for r in self.receptacles)


def layouts_dir() -> str:
    """Folder holding alfworld's ``FloorPlan*-openable.json`` files."""
    import_alfworld()
    import alfworld.gen

    return os.path.join(os.path.dirname(alfworld.gen.__file__), "layouts")


def receptacle_type(alfred_id: str) -> str:
    """Type of a receptacle id: the first field, or the last one for ``Sink|..|SinkBasin``."""
    parts = alfred_id.split("|")
    return parts[-1] if len(parts) == 5 else parts[0]


@cache
def available_scenes() -> tuple[int, ...]:
    """Scene numbers with both an ``-openable.json`` and an ``-objects.json`` layout file."""
    folder = layouts_dir()
    numbers = []
    for name in os.listdir(folder):
        if name.startswith("FloorPlan") and name.endswith("-openable.json"):
            number = int(name[len("FloorPlan"):-len("-openable.json")])
            if os.path.exists(os.path.join(folder, f"FloorPlan{number}-objects.json")):
                numbers.append(number)
    return tuple(sorted(numbers))


def split_scenes(split: str) -> tuple[int, ...]:
    """Scenes of a split: ``"train"`` (ALFRED train scenes) or ``"eval"`` (held-out scenes 1-6 of
    each room type, ALFWorld's ``valid_unseen``)."""
    import_alfworld()
    from alfworld.gen import constants

    if split == "train":
        wanted = set(constants.TRAIN_SCENE_NUMBERS)
    elif split == "eval":
        wanted = set(constants.TEST_SCENE_NUMBERS)
    else:
        raise ValueError(f"Unknown split {split!r}; choose 'train' or 'eval'.")
    return tuple(n for n in available_scenes() if n in wanted)


def room_type(number: int) -> str:
    """ALFRED's room type of a scene number: Kitchen, LivingRoom, Bedroom or Bathroom."""
    import_alfworld()
    from alfworld.gen import constants

    for name, numbers in constants.SCENE_TYPE.items():
        if number in numbers:
            return name
    raise ValueError(f"Scene {number} is not an ALFRED scene number.")


@cache
def load_scene(number: int) -> SceneLayout:
    """Read one floor plan's receptacles and object types."""
    from alfworld.gen import constants

    folder = layouts_dir()
    path = os.path.join(folder, f"FloorPlan{number}-openable.json")
    if not os.path.exists(path):
        raise ValueError(f"No ALFRED layout for scene {number}; available: {available_scenes()}.")
    with open(path) as handle:
        receptacle_ids = sorted(json.load(handle))
    with open(os.path.join(folder, f"FloorPlan{number}-objects.json")) as handle:
        present = set(json.load(handle))

    receptacles = [Receptacle(rid, receptacle_type(rid)) for rid in receptacle_ids]
    listed_types = {r.type_name for r in receptacles}
    for type_name in EXTRA_RECEPTACLE_TYPES:
        if type_name in present and type_name not in listed_types:
            receptacles.append(Receptacle(f"{type_name}|extra|1", type_name))

    receptacle_types = {r.type_name for r in receptacles}
    static_types = set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)
    movable = set()
    for r_type, contents in constants.VAL_RECEPTACLE_OBJECTS.items():
        if r_type in receptacle_types:
            movable |= set(contents)
    object_types = sorted(
        t for t in present if t in movable and t not in static_types and t in constants.OBJECTS
    )
    lamp_types = tuple(t for t in LAMP_TYPES if t in present)
    return SceneLayout(number, tuple(receptacles), tuple(object_types), lamp_types)
