"""Options of the `vlm-agent` subcommands: one dataclass each, parsed by `trl.TrlParser`, with
`--config FILE.yaml` (read and type-checked by `vlm_agent.config_files` first; flags win) and one
`vlm-agent <command>: error: ...` line for every mistake (an unknown option gets the closest
known one: `unknown option --totl_timesteps; did you mean --total_timesteps?`).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import typing
from typing import Any


def fail(command: str, message: str, status: int = 2) -> int:
    """A user error: one line on stderr (status 2 as argparse gives for options, 1 for the rest), no traceback."""
    print(f"vlm-agent {command}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return status


def parser_for(dataclass_type: type, command: str, description: str):
    """The subcommand's parser: its options dataclass plus the documented `--config FILE.yaml`."""
    from trl import TrlParser

    class OneLineErrorParser(TrlParser):
        """argparse prints the whole usage (dozens of lines for train) before an error; one line is enough."""

        def error(self, message: str) -> typing.NoReturn:
            self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")

    # No abbreviations: `--episode 4` is an unknown option with a suggestion, not a guess at `--episodes`.
    parser = OneLineErrorParser(dataclass_type, prog=f"vlm-agent {command}", description=description,
                                allow_abbrev=False)
    # `parse` reads --config itself; declaring it here documents it in --help.
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file setting any of the options below by name.")
    for action in parser._actions:
        negated = [option for option in action.option_strings if option.startswith("--no_")]
        if negated and isinstance(action, argparse._StoreFalseAction):
            # HfArgumentParser gives `--no_X` the help of `--X` and "(default: False)": it read as
            # the opposite of what it does.
            name = negated[0][len("--no_"):]
            action.help = f"Turn {name} off (the same as --{name} false)."
            action.default = argparse.SUPPRESS  # the `--X` action sets the field's default
    return parser


def split_config(argv: list[str]) -> tuple[list[str], str | None]:
    """`argv` without its `--config FILE` / `--config=FILE`, and FILE (None when not given)."""
    rest: list[str] = []
    paths: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--config":
            value = next(tokens, None)
            if value is None or value.startswith("--"):
                raise ValueError("--config needs a file: --config FILE.yaml")
            paths.append(value)
        elif token.startswith("--config="):
            paths.append(token.split("=", 1)[1])
        else:
            rest.append(token)
    if len(paths) > 1:
        raise ValueError(f"--config is given {len(paths)} times ({', '.join(paths)}); give one file")
    return rest, (paths[0] if paths else None)


def has_config(argv: list[str]) -> bool:
    return any(token == "--config" or token.startswith("--config=") for token in argv)


def unknown_option_message(parser: argparse.ArgumentParser, remaining: list[str]) -> str:
    """One line for arguments no option took: the first unknown option and its closest known one."""
    options = [token for token in remaining if token.startswith("-")]
    if not options:
        return f"unexpected argument {remaining[0]!r}; every option is a --flag (see --help)"
    option = options[0].split("=", 1)[0]
    known = [name for name in parser._option_string_actions if name.startswith("--") and "-" not in name[2:]]
    close = difflib.get_close_matches(option.replace("-", "_").replace("__", "--", 1), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else "; see --help for the options"
    return f"unknown option {option}{hint}"


def config_file_options(dataclass_type: type, config_path: str | None, comma_separated: tuple[str, ...]) -> dict:
    """The checked options of a `--config` file ({} without one)."""
    from vlm_agent.config_files import check_options, read_config_file

    if config_path is None:
        return {}
    return check_options(read_config_file(config_path), dataclass_type, source=config_path,
                         comma_separated=comma_separated)


def parse(dataclass_type: type, command: str, argv: list[str], comma_separated: tuple[str, ...] = (),
          description: str = ""):
    """The options dataclass from `argv`: config file (type-checked) first, flags over it.

    `comma_separated`: text options a config file may write as a YAML list.
    """
    parser = parser_for(dataclass_type, command, description)
    try:
        argv, config_path = split_config(argv)
        options = config_file_options(dataclass_type, config_path, comma_separated)
        if options:
            # Checked values become the defaults, so command-line flags still override the file.
            parser.set_defaults_with_config(**options)
        # The first output is the dataclass; a second one holds the documented-only --config.
        *outputs, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if remaining:
            raise ValueError(unknown_option_message(parser, remaining))
    except ValueError as error:  # unknown options, config files, __post_init__ validation
        parser.error(str(error))
    return outputs[0]


def given_options(dataclass_type: type, command: str, argv: list[str], comma_separated: tuple[str, ...] = (),
                  description: str = "") -> dict[str, Any]:
    """Only the options `argv` sets (its flags, over its `--config` file's), converted by type but
    not validated together: what a resumed run is asked to change."""
    parser = parser_for(dataclass_type, command, description)
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    try:
        argv, config_path = split_config(argv)
        options = config_file_options(dataclass_type, config_path, comma_separated)
        namespace, remaining = parser.parse_known_args(argv)
        if remaining:
            raise ValueError(unknown_option_message(parser, remaining))
    except ValueError as error:
        parser.error(str(error))
    given = {**options, **vars(namespace)}
    given.pop("config", None)
    return given
