"""Bridge to the alfworld / textworld text engine.

Everything that imports ``alfworld`` or ``textworld`` goes through :func:`import_alfworld`, so
that ``import gym_cards`` stays light and importing alfworld never creates ``~/.cache/alfworld``
(alfworld's ``info.py`` makes the folder named by ``ALFWORLD_DATA`` at import time; when the user
has not set it we point it at a temporary folder first).

:class:`TextGame` plays one ALFWorld game file (``game.tw-pddl``) with textworld's ``PddlEnv`` and
alfworld's ``AlfredDemangler`` (the "apple 1" names), and
:class:`HandCodedExpert` drives alfworld's hand-coded TextWorld expert alongside it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# The value we put into ALFWORLD_DATA ourselves (None until we do), so that a later look-up of
# "the user's ALFWORLD_DATA" does not mistake our scratch folder for real data.
_SCRATCH_ALFWORLD_DATA: str | None = None

INSTALL_HINT = (
    "The ALFWorld environment needs the optional extra: pip install 'gym-cards-vlm[alfworld]' "
    "(or pip install alfworld==0.4.2)."
)


def user_alfworld_data() -> str | None:
    """Return ``$ALFWORLD_DATA`` as the user set it, or None if unset (or set by us)."""
    value = os.environ.get("ALFWORLD_DATA")
    if not value or value == _SCRATCH_ALFWORLD_DATA:
        return None
    return value


def import_alfworld() -> ModuleType:
    """Import and return the ``alfworld`` package without littering ``~/.cache``.

    Raises:
        ImportError: alfworld (or textworld / fast-downward) is not installed; the message says
            which extra to install.
    """
    global _SCRATCH_ALFWORLD_DATA
    if user_alfworld_data() is None and _SCRATCH_ALFWORLD_DATA is None:
        _SCRATCH_ALFWORLD_DATA = os.path.join(tempfile.gettempdir(), "gym_cards_alfworld_data")
        os.environ["ALFWORLD_DATA"] = _SCRATCH_ALFWORLD_DATA
    try:
        import alfworld
        import alfworld.info
        import textworld  # noqa: F401
        from textworld.envs import PddlEnv  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} (import failed: {error})") from error
    if not _ORIGINALS:  # first import: install once, so that uninstall_engine_caches() sticks
        install_engine_caches()
    return alfworld


# --------------------------------------------------------------------------------------------
# Engine caches
# --------------------------------------------------------------------------------------------
# Four pure computations dominate textworld's PDDL engine; we memoise or slim them, keeping the
# output byte-identical (tests/test_alfworld.py plays the same commands with and without them).
_PARSE_CACHE: dict[tuple[str, str], Any] = {}
_TRANSLATION_CACHE: OrderedDict[tuple[int, str, bool], Any] = OrderedDict()
_TRANSLATION_CACHE_SIZE = 64
_ORIGINALS: dict[str, Any] = {}


def _cached_parse_and_convert(text: str, rule_name: str = "symbols", **kwargs: Any) -> Any:
    """Drop-in for textworld's ``textgen._parse_and_convert`` that memoises the parse.

    textworld re-parses the same short grammar strings (command templates such as
    ``"take {o} from {r}"``, feedback rule names) with TatSu for every admissible command at
    every step. The parse is a pure function of the text, so we keep one parsed copy per string
    and hand out deep copies (the engine sets the symbols' ``context``).
    """
    if kwargs.get("trace"):
        return _ORIGINALS["parse"](text, rule_name=rule_name, **kwargs)
    key = (text, rule_name)
    parsed = _PARSE_CACHE.get(key)
    if parsed is None:
        parsed = _ORIGINALS["parse"](text, rule_name=rule_name)
        _PARSE_CACHE[key] = parsed
    return copy.deepcopy(parsed)


def _cached_logic_parse(text: str, rule_name: str, **kwargs: Any) -> Any:
    """Drop-in for ``textworld.logic._parse_and_convert``: the grammar's conditions
    (``"openable(r:receptacle) & opened(r:receptacle)"``) are re-parsed for every symbol; same
    memoisation as :func:`_cached_parse_and_convert`."""
    if kwargs:
        return _ORIGINALS["logic_parse"](text, rule_name=rule_name, **kwargs)
    key = ("logic:" + text, rule_name)
    parsed = _PARSE_CACHE.get(key)
    if parsed is None:
        parsed = _ORIGINALS["logic_parse"](text, rule_name=rule_name)
        _PARSE_CACHE[key] = parsed
    return copy.deepcopy(parsed)


def _shallow_copy_context(context: dict[str, Any]) -> dict[str, Any]:
    """Drop-in for textworld's ``textgen.copy_context`` without its deep copies.

    textworld deep-copies the ``variables`` (entity infos) and ``mapping`` dicts for every
    grammar symbol; the derivation only adds keys to those dicts and never changes the values,
    so new dicts holding the same values give the same text at a fraction of the cost.
    """
    return {
        "state": context["state"],
        "facts": context["facts"],
        "variables": dict(context["variables"]),
        "mapping": dict(context["mapping"]),
        "entity_infos": context["entity_infos"],
    }


def _cached_pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
    """Drop-in for ``fast_downward.pddl2sas`` that memoises the translation of a problem.

    textworld translates the PDDL problem twice (plain and optimised) on every load and every
    reset; the result is a pure function of (domain, problem, optimize) and is only read.
    """
    key = (hash(domain), problem, optimize)
    result = _TRANSLATION_CACHE.pop(key, None)
    if result is None:
        result = _ORIGINALS["pddl2sas"](domain, problem, verbose=verbose, optimize=optimize)
    _TRANSLATION_CACHE[key] = result
    while len(_TRANSLATION_CACHE) > _TRANSLATION_CACHE_SIZE:
        _TRANSLATION_CACHE.popitem(last=False)
    return result


def install_engine_caches() -> None:
    """Route textworld's grammar and logic parsers, context copy and PDDL translation through the cached
    versions above. Idempotent; :func:`uninstall_engine_caches` restores the originals."""
    import fast_downward
    import textworld.logic
    from textworld.envs.pddl import textgen

    if not _ORIGINALS:
        _ORIGINALS.update(parse=textgen._parse_and_convert, copy_context=textgen.copy_context,
                          pddl2sas=fast_downward.pddl2sas, logic_parse=textworld.logic._parse_and_convert)
    textgen._parse_and_convert = _cached_parse_and_convert
    textworld.logic._parse_and_convert = _cached_logic_parse
    textgen.copy_context = _shallow_copy_context
    fast_downward.pddl2sas = _cached_pddl2sas


def uninstall_engine_caches() -> None:
    """Restore textworld's and fast_downward's original functions."""
    import fast_downward
    import textworld.logic
    from textworld.envs.pddl import textgen

    if _ORIGINALS:
        textgen._parse_and_convert = _ORIGINALS["parse"]
        textworld.logic._parse_and_convert = _ORIGINALS["logic_parse"]
        textgen.copy_context = _ORIGINALS["copy_context"]
        fast_downward.pddl2sas = _ORIGINALS["pddl2sas"]
    _PARSE_CACHE.clear()
    _TRANSLATION_CACHE.clear()


# --------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------
Fact = tuple[str, ...]
"""A world fact as ``(predicate, arg1, ...)``, lower-case predicate, display names as arguments
(``("inreceptacle", "apple 1", "fridge 1")``, ``("objecttype", "apple 1", "AppleType")``)."""


def facts_from_state(state: Any) -> frozenset[Fact]:
    """Turn a textworld game state's ``facts`` (Propositions) into plain tuples."""
    return frozenset(
        (fact.name.lower(), *(name.strip() for name in fact.names)) for fact in state["facts"]
    )


# --------------------------------------------------------------------------------------------
# One game
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GameTask:
    """What ``traj_data.json`` says the game asks for."""

    task_type: str
    object_target: str
    parent_target: str
    toggle_target: str

    @classmethod
    def from_traj_data(cls, traj_data: dict[str, Any]) -> GameTask:
        params = traj_data["pddl_params"]
        return cls(
            task_type=traj_data["task_type"],
            object_target=params.get("object_target", "") or "",
            parent_target=params.get("parent_target", "") or "",
            toggle_target=params.get("toggle_target", "") or "",
        )


def read_traj_data(game_file: str) -> dict[str, Any]:
    """Read the ``traj_data.json`` next to a ``game.tw-pddl`` file."""
    with open(os.path.join(os.path.dirname(game_file), "traj_data.json")) as handle:
        return json.load(handle)


@contextlib.contextmanager
def preserved_argv() -> Iterator[None]:
    """Undo fast-downward's translator, which overwrites ``sys.argv`` whenever it runs."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


class TextGame:
    """One ALFWorld game file played by textworld's PDDL engine with alfworld's name demangler.

    ``reset()`` and ``step(command)`` return textworld ``GameState`` objects with
    ``feedback``, ``admissible_commands`` (sorted), ``won`` and ``facts``.
    """

    def __init__(self, game_file: str) -> None:
        import_alfworld()
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from textworld.envs import PddlEnv

        if not os.path.isfile(game_file):
            raise FileNotFoundError(f"ALFWorld game file not found: {game_file}")
        self.game_file = game_file
        self.traj_data = read_traj_data(game_file)
        self.task = GameTask.from_traj_data(self.traj_data)
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, feedback=True)
        env = AlfredDemangler(PddlEnv(infos), shuffle=False)
        with open(game_file) as handle:
            game_data = json.load(handle)  # PddlEnv.load(path) would leave the file open
        with preserved_argv():
            env.load(game_data)
        self._env = env

    def reset(self) -> Any:
        with preserved_argv():
            return self._env.reset()

    def step(self, command: str) -> Any:
        with preserved_argv():
            state, _score, _done = self._env.step(command)
        return state


# --------------------------------------------------------------------------------------------
# alfworld's hand-coded expert
# --------------------------------------------------------------------------------------------
class ExpertGaveUp(RuntimeError):
    """alfworld's hand-coded expert timed out or ran out of sub-goals."""


def expert_view_of_command(command: str) -> str:
    """Rewrite a command the way alfworld's hand-coded expert expects to see it.

    The engine's put command reads "move X to Y", but the expert's state tracking looks for the
    word "put" to drop the object from its inventory; without this it keeps believing it holds
    the object and loops (seen on pick-two games).
    """
    if command.startswith("move "):
        return "put " + command[len("move "):]
    return command


class HandCodedExpert:
    """alfworld's ``HandCodedTWAgent`` run alongside a game, as alfworld's ``AlfredExpert`` does.

    It must observe every command (whoever chose it) to keep its beliefs, so call
    :meth:`observe_reset` after each reset and :meth:`observe_step` after each step. Its few
    random choices use a private ``random.Random`` seeded per episode (alfworld calls the global
    ``random`` module), so the same seed gives the same expert.
    """

    def __init__(self, max_steps: int = 200) -> None:
        import_alfworld()
        from alfworld.agents.expert import HandCodedTWAgent

        self._agent = HandCodedTWAgent(max_steps=max_steps)
        self._rng_state = random.Random(0).getstate()
        self.next_command = "look"
        self.gave_up = False

    def _call_with_private_rng(self, function: Any, *args: Any) -> Any:
        saved = random.getstate()
        random.setstate(self._rng_state)
        try:
            return function(*args)
        finally:
            self._rng_state = random.getstate()
            random.setstate(saved)

    def observe_reset(self, game_file: str, state: Any, seed: int) -> None:
        self._rng_state = random.Random(seed).getstate()
        self._agent.reset(game_file)
        self._agent.observe(state["feedback"])
        self.next_command = "look"
        self.gave_up = False

    def observe_step(self, state: Any, command: str) -> None:
        from alfworld.agents.expert import HandCodedAgentFailed, HandCodedAgentTimeout

        self.next_command = "look"
        if self.gave_up:
            return
        try:
            suggestion = self._call_with_private_rng(
                self._agent.act, state, 0, state["won"], expert_view_of_command(command)
            )
        except (HandCodedAgentFailed, HandCodedAgentTimeout):
            self.gave_up = True
            return
        if suggestion in state["admissible_commands"]:
            self.next_command = suggestion


def play_expert(game_file: str, max_steps: int, seed: int = 0) -> tuple[bool, list[str]]:
    """Let the hand-coded expert play a game; return (won within max_steps, commands issued)."""
    game = TextGame(game_file)
    expert = HandCodedExpert()
    state = game.reset()
    expert.observe_reset(game_file, state, seed)
    commands: list[str] = []
    while len(commands) < max_steps and not state["won"]:
        command = expert.next_command
        state = game.step(command)
        commands.append(command)
        expert.observe_step(state, command)
        if expert.gave_up:
            break
    return bool(state["won"]), commands
