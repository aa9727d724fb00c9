"""The environment side of the agent: `--env_kwargs`, up-front checks, and observation images.

Every command that plays an environment (`vlm-agent sft | train | eval`) builds it with
`gymnasium.make(env_id, **env_kwargs)`. `env_kwargs` comes from the command line as a JSON or
YAML mapping (`--env_kwargs '{"split": "eval"}'`, `--env_kwargs 'max_position: 8'`) or from a
YAML config as a mapping. `check_env` refuses an unknown id or an option the environment's
constructor does not take, in one line and before any model is built (a misspelt option would
otherwise surface minutes later, after the SFT warm start).

Observations may be an image array (the card games) or a mapping holding one (ALFWorld:
`{"image", "text", "admissible_commands"}`); the agent reads the image from the observation and
the text through the env contract (`describe()`, `legal_actions()`, docs/CONTRACTS.md), so
`observation_image` is all the structure it needs to know.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Keyword arguments `gymnasium.make` itself takes (besides the env constructor's).
MAKE_OPTIONS = frozenset({"max_episode_steps", "disable_env_checker"})

#: Environments whose `step` takes an action past the legal list as an inadmissible command that
#: changes nothing and costs -1 (docs/CONTRACTS.md): the only ones the "nothing" rule for unusable
#: answers (`InvalidActionPolicy(mode="nothing")`, the paper's ALFWorld rule) can play.
NOTHING_HAPPENS_ENVS = frozenset({"gym_cards/ALFWorld-v0"})

#: The key of the image in a mapping observation.
IMAGE_KEY = "image"


class EnvKwargsError(argparse.ArgumentTypeError, ValueError):
    """An `env_kwargs` value that is not a mapping of option names.

    A ValueError for Python callers; an ArgumentTypeError so that the command line's parser shows
    this message (it replaces a type's ValueError by a generic "invalid value").
    """


class EnvKwargs(dict):
    """Options of `gymnasium.make(env_id, **env_kwargs)`: a dict, built from a mapping or from a
    JSON/YAML mapping text (what `--env_kwargs` gives). The type of the configs' `env_kwargs`."""

    def __init__(self, value: Any = None, /) -> None:
        if value is None or isinstance(value, (str, Mapping)):
            super().__init__(parse_env_kwargs(value))
        else:  # (key, value) pairs, as dataclasses.asdict copies a dict
            super().__init__(parse_env_kwargs(dict(value)))


def parse_env_kwargs(value: Any) -> dict[str, Any]:
    """`--env_kwargs` as a dict: a mapping as is, a JSON or YAML mapping text parsed, None or "" -> {}.

    Raises:
        EnvKwargsError: (a ValueError) Text that is not a mapping, or a key that is not a name.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            import yaml  # YAML is a superset of JSON's mappings; the agent extra ships PyYAML

            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as error:
                first = str(error).splitlines()[0]
                raise EnvKwargsError(
                    f"env_kwargs {value!r} is neither JSON nor YAML ({first}); write a mapping such as "
                    "'{\"split\": \"eval\"}'"
                ) from None
        value = parsed
    if not isinstance(value, Mapping):
        raise EnvKwargsError(
            f"env_kwargs must be a mapping of option names to values, got {value!r}; write e.g. "
            "'{\"split\": \"eval\"}'"
        )
    bad = [key for key in value if not isinstance(key, str) or not key.isidentifier()]
    if bad:
        raise EnvKwargsError(f"env_kwargs keys must be option names, got {bad}")
    return dict(value)


def validate_env_id(env_id: str) -> None:
    """Refuse an id that is not registered, in one line that suggests the right one.

    Reads the registry only (builds nothing), so commands can check their ids before they build a
    model or create a run folder. ``NumberLine-v0`` gets "did you mean 'gym_cards/NumberLine-v0'".

    Raises:
        ValueError: ``env_id`` is not registered.
    """
    import gymnasium as gym

    import gym_cards  # noqa: F401  (registers the gym_cards/* ids)

    if env_id in gym.registry:
        return
    known = sorted(spec_id for spec_id in gym.registry if spec_id.startswith("gym_cards/"))
    by_name = {spec_id.split("/", 1)[1].lower(): spec_id for spec_id in known}
    suggestion = by_name.get(env_id.strip().lower().split("/")[-1])
    if suggestion is None:
        close = difflib.get_close_matches(env_id, known, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    hint = f"did you mean {suggestion!r}? " if suggestion else ""
    raise ValueError(f"unknown environment id {env_id!r}: {hint}known gym_cards ids: {', '.join(known)}")


def check_invalid_action(env_id: str, mode: str) -> None:
    """ValueError (one line) when the invalid-answer rule ``mode`` cannot play ``env_id``: the
    "nothing" rule needs an env of :data:`NOTHING_HAPPENS_ENVS`."""
    if mode == "nothing" and env_id not in NOTHING_HAPPENS_ENVS:
        raise ValueError(
            f"invalid_action 'nothing' (nothing happens, reward -1) needs an environment that accepts an "
            f"inadmissible command ({', '.join(sorted(NOTHING_HAPPENS_ENVS))}); {env_id} does not: use 'random' or 'penalty'"
        )


def check_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """Refuse an unknown env id, or an option that `env_id`'s constructor does not accept.

    The check reads the registered entry point's signature (importing its module, not building
    the environment); a constructor taking ``**kwargs`` accepts every option.

    Raises:
        ValueError: One line naming the problem and the fix.
    """
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import gym_cards  # noqa: F401  (registers the gym_cards/* ids)

    validate_env_id(env_id)
    spec = gym.spec(env_id)
    options = dict(env_kwargs or {})
    if not options:
        return
    creator = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
    try:
        parameters = inspect.signature(creator).parameters
    except (TypeError, ValueError):  # a builtin or C extension: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = {name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL} - {"self"}
    accepted |= MAKE_OPTIONS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"env_kwargs option(s) {unknown} are not accepted by {env_id}; its options are "
            f"{sorted(accepted - MAKE_OPTIONS)} (and gymnasium.make's {sorted(MAKE_OPTIONS)})"
        )


def _image_entry(observation: Mapping[str, Any]) -> Any:
    """A mapping observation's (or a vector env's stacked mapping's) ``"image"`` entry."""
    if IMAGE_KEY not in observation:
        raise TypeError(
            f"a mapping observation needs an {IMAGE_KEY!r} entry for the vision-language agent; "
            f"got keys {sorted(observation)}"
        )
    return observation[IMAGE_KEY]


def observation_image(observation: Any) -> np.ndarray:
    """The image of one observation: the array itself, or a mapping's ``"image"`` entry.

    Raises:
        TypeError: An observation holding no image, with what it does hold.
    """
    if isinstance(observation, Mapping):
        observation = _image_entry(observation)
    image = np.asarray(observation)
    if image.dtype == object or image.ndim not in (2, 3):
        raise TypeError(
            f"observation is not an image (an array [H, W, 3] or a mapping with {IMAGE_KEY!r}); got dtype "
            f"{image.dtype} and shape {image.shape}"
        )
    return image
