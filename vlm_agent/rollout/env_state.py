"""Environment state as data: how each running episode started, and the actions since.

A checkpoint must let a resumed run continue the episodes in flight exactly, but environments
are not data: ALFWorld holds a text engine that cannot be pickled, and pickles are code, not
something to load from a file one did not write. Every environment here is deterministic given
its generator (`env.np_random`, the contract of docs/CONTRACTS.md), so an episode is fully
described by where its reset started (the reset seed, or the generator's state just before an
unseeded reset) and the actions taken since. `replay_episode` rebuilds it: restore the
generator, reset, replay the actions. For ALFWorld that is the game file (drawn by the reset)
and the commands of the episode; for the card games their generator and moves.

Everything in an `EpisodeLog` is JSON: numpy's `bit_generator.state` is a dict of ints and
strings. The replay is checked: the game file, every command's text, the generator state after
the replay and a SHA-256 of the observation must equal what was saved, else `EnvStateError`
says which differs (an env whose randomness does not come from `np_random`, or code that
changed between save and resume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from vlm_agent.rollout.environments import observation_image

#: Bit generators a saved state may name (numpy's own; nothing else is ever constructed).
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}


class EnvStateError(RuntimeError):
    """A saved episode could not be rebuilt exactly."""


@dataclass
class EpisodeLog:
    """How one environment's current episode started and what was done since (all JSON).

    Attributes:
        reset_seed: The seed of the reset that started the episode, or None for an unseeded one.
        rng_before_reset: `np_random.bit_generator.state` just before an unseeded reset.
        actions: The actions passed to `step` since that reset, in order.
        commands: Their texts (`legal_actions()[action]` when taken), checked on replay.
        game: ALFWorld's `info["gamefile"]` at the reset ("" for other envs), checked on replay.
    """

    reset_seed: int | None = None
    rng_before_reset: dict[str, Any] | None = None
    actions: list[int] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    game: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpisodeLog:
        try:
            log = cls(
                reset_seed=None if data["reset_seed"] is None else int(data["reset_seed"]),
                rng_before_reset=data["rng_before_reset"],
                actions=[int(a) for a in data["actions"]],
                commands=[str(c) for c in data["commands"]],
                game=str(data.get("game", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise EnvStateError(f"saved episode state is malformed ({type(error).__name__}: {error})") from None
        if (log.reset_seed is None) == (log.rng_before_reset is None):
            raise EnvStateError("saved episode state needs exactly one of reset_seed and rng_before_reset")
        return log


def rng_state(env: Any) -> dict[str, Any]:
    """The JSON state of an environment's generator (`env.unwrapped.np_random`)."""
    return env.unwrapped.np_random.bit_generator.state


def generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A numpy Generator in the saved `bit_generator.state` (only numpy's own bit generators)."""
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise EnvStateError(f"saved generator state names bit generator {name!r}; expected one of {sorted(_BIT_GENERATORS)}")
    bit_generator = _BIT_GENERATORS[name]()
    try:
        bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as error:
        raise EnvStateError(f"saved generator state is malformed ({error})") from None
    return np.random.Generator(bit_generator)


def observation_fingerprint(observation: Any, env: Any) -> str:
    """SHA-256 of what the agent sees: the observation's image and the env's `describe()` text."""
    image = np.ascontiguousarray(observation_image(observation))
    digest = hashlib.sha256()
    digest.update(str((image.shape, image.dtype.str)).encode())
    digest.update(image.tobytes())
    digest.update(str(env.unwrapped.describe()).encode())
    return digest.hexdigest()


def game_of(info: Mapping[str, Any]) -> str:
    """The game an episode plays, from ALFWorld's info["gamefile"] ("" for envs without one).

    Only the last three path parts (``<task folder>/<trial>/game.tw-pddl``) are kept: they name
    the game, while the folder above depends on where the package or the data are installed.
    """
    return game_key(str(info.get("gamefile", "") or ""))


def game_key(path: str) -> str:
    """``<task folder>/<trial>/<file>`` of a game file path ("" stays "")."""
    return "/".join(PurePath(path).parts[-3:]) if path else ""


def action_text(env: Any, action: int) -> str:
    """The text of `action` in the env's current state (`legal_actions()[action]`)."""
    legal = list(env.unwrapped.legal_actions())
    return str(legal[action]) if 0 <= action < len(legal) else f"<action {action}>"


def replay_episode(env: Any, log: EpisodeLog) -> tuple[Any, dict[str, Any]]:
    """Rebuild `log`'s episode in `env` (any earlier state is discarded); returns (observation, info).

    Raises:
        EnvStateError: The replay diverged from the saved episode (game, a command, an early end).
    """
    if log.reset_seed is not None:
        observation, info = env.reset(seed=log.reset_seed)
    else:
        env.unwrapped.np_random = generator_from_state(log.rng_before_reset)
        observation, info = env.reset()
    if game_of(info) != log.game:
        raise EnvStateError(
            f"replaying the saved episode drew game {game_of(info)!r}, the checkpoint recorded {log.game!r}; "
            "resume with the same env_kwargs and game files"
        )
    if len(log.commands) != len(log.actions):
        raise EnvStateError("saved episode state has a different number of actions and commands")
    for step, (action, command) in enumerate(zip(log.actions, log.commands)):
        now = action_text(env, action)
        if now != command:
            raise EnvStateError(
                f"replaying the saved episode diverged at step {step}: action {action} is {now!r} now, "
                f"{command!r} when it was taken"
            )
        observation, _, terminated, truncated, info = env.step(action)
        if (terminated or truncated) and step + 1 < len(log.actions):
            raise EnvStateError(f"replaying the saved episode ended early, at step {step} of {len(log.actions)}")
    return observation, info
