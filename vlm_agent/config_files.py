"""Option files of `vlm-agent train|sft|eval --config FILE.yaml`: read safely, checked by type.

A config file sets a command's options (the fields of its options dataclass) by name. Values
from a file never pass through argparse, so nothing would check them before they reach the code
(a `num_envs: 2.0` crashed minutes later, a `lora_target_modules` list raised AttributeError).
Here every value is checked against its field's declared type first, and every problem is one
line naming the file, the key and what to write instead.

The YAML is read with a `yaml.SafeLoader` subclass: tags such as `!!python/object` are refused,
never constructed, and a key given twice is an error (YAML itself keeps the last one silently).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

#: A YAML 1.1 quirk: `1e-5` (no dot) is read as text. Float options accept such text.
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ConfigFileError(ValueError):
    """A config file cannot be used; the message is one line that names the file and the fix."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options of a YAML config file, as a mapping of option name to plain value.

    Raises:
        ConfigFileError: the file is missing or unreadable, is not YAML, uses a tag that would
            construct a Python object, repeats a key, or is not a mapping.
    """
    import yaml

    class StrictSafeLoader(yaml.SafeLoader):
        """SafeLoader that refuses a mapping key given twice."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            first_lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader reports unhashable keys itself
                if key in first_lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first on line {first_lines[key] + 1})",
                        key_node.start_mark,
                    )
                first_lines[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file {source} does not exist") from None
    except IsADirectoryError:
        raise ConfigFileError(f"config file {source} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"config file {source} cannot be read ({error})") from None
    try:
        options = yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(source)
        problem = error.problem or error.context or "not valid YAML"
        if problem.startswith("could not determine a constructor for the tag"):
            tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
            problem = f"the tag {tag} is not allowed: a config file holds plain values (numbers, text, true/false, lists)"
        raise ConfigFileError(f"{where}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{source} is not valid YAML ({' '.join(str(error).split())})") from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigFileError(
            f"{source} must be a YAML mapping of option names to values (`num_envs: 4`), not a {type(options).__name__}"
        )
    return options


def check_options(
    options: Mapping[Any, Any],
    dataclass_type: type,
    *,
    source: str,
    comma_separated: Collection[str] = (),
) -> dict[str, Any]:
    """Check each option against the declared type of `dataclass_type`'s field of that name.

    Returns the options with ints widened to floats for float fields, float-looking text (YAML's
    `1e-5`) read as floats, a single text turned into a one-item list for list fields, and lists
    of text joined with "," for the fields named in `comma_separated`.

    Raises:
        ConfigFileError: an unknown option, or a value of the wrong type (one line naming it).
    """
    fields = {f.name: f for f in dataclasses.fields(dataclass_type) if f.init}
    hints = typing.get_type_hints(dataclass_type)
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if not isinstance(name, str) or name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigFileError(f"{source}: {name!r} is not an option{hint}; see --help for the options")
        try:
            checked[name] = coerce(value, hints[name], comma_separated=name in comma_separated)
        except _WrongType as wrong:
            default = fields[name].default
            keep = f"; remove the line to keep the default {default!r}" if value is None and default is not dataclasses.MISSING else ""
            raise ConfigFileError(
                f"{source}: {name}: {_show(value)} is {_kind(value)}, but {name} takes {wrong.expected}{keep}"
            ) from None
    return checked


class _WrongType(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def coerce(value: Any, hint: Any, *, comma_separated: bool = False) -> Any:
    """`value` as a value of type `hint` (bool, int, float, str, list[...], X | None), or `_WrongType`.

    Types outside that set are passed through unchecked.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arguments = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(arguments) < len(typing.get_args(hint))
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", ""))):
            return None
        if len(arguments) != 1:
            return value
        try:
            return coerce(value, arguments[0], comma_separated=comma_separated)
        except _WrongType as wrong:
            raise _WrongType(f"{wrong.expected} or null" if optional else wrong.expected) from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _WrongType("an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        raise _WrongType("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if comma_separated and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return ",".join(value)
        raise _WrongType("text, or a list of texts" if comma_separated else "text")
    if origin is list:
        (item_hint,) = typing.get_args(hint) or (Any,)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise _WrongType("a list")
        try:
            return [coerce(item, item_hint) for item in items]
        except _WrongType as wrong:
            raise _WrongType(f"a list of items that are each {wrong.expected}") from None
    return value


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a decimal number", str: "text",
             list: "a list", dict: "a mapping", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _show(value: Any) -> str:
    """The value as it was written in YAML (null, true), shortened."""
    text = {None: "null", True: "true", False: "false"}.get(value, None) if isinstance(value, (bool, type(None))) else None
    text = text or repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
