"""The ``gym-cards`` command: play an environment by hand, list them, generate ALFWorld games."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import gymnasium as gym

import gym_cards

QUIT_WORDS = {"quit", "exit"}


def key_bindings(action_names: Sequence[str]) -> dict[str, int]:
    """Typed characters for each action: its own character, "0" for 10, j/q/k for 11-13,
    s/h for stand/hit, Enter for "=" and the arrow words for NumberLine's moves."""
    special = {"10": "0", "11": "j", "12": "q", "13": "k", "stand": "s", "hit": "h"}
    bindings: dict[str, int] = {}
    for index, name in enumerate(action_names):
        bindings[special.get(name, name)] = index
        if name == "=":
            bindings["\r"] = index
    if tuple(action_names) == ("-", "+"):
        bindings.update({"left": 0, "right": 1})
    return bindings


def _resolve(text: str, action_names: Sequence[str]) -> int | None:
    text = text.strip()
    if text in action_names:
        return list(action_names).index(text)
    if text.isdigit() and len(action_names) <= 10 and int(text) < len(action_names):
        return int(text)
    return key_bindings(action_names).get(text.lower())


def shortcuts(action_names: Sequence[str]) -> str:
    """The typed shortcuts of the actions that have one besides their own name, e.g. ``s: stand, h: hit``."""
    bindings = key_bindings(action_names)
    shown = [f"{key}: {action_names[index]}" for key, index in bindings.items()
             if key != action_names[index] and key.isprintable()]
    if "\r" in bindings:
        shown.append("Enter: " + action_names[bindings["\r"]])
    return ", ".join(shown)


PROMPT = "action> "


def play_text(env_id: str, seed: int | None, stdin: TextIO, stdout: TextIO) -> float:
    """Play in the terminal: the state is printed as text, actions are typed after the ``action>``
    prompt. Returns the total reward of the episode in progress when play ends."""
    env = gym.make(env_id)
    names = env.unwrapped.action_names
    _, _ = env.reset(seed=seed)
    total = 0.0
    keys = shortcuts(names)
    print(f"{env_id}: actions {', '.join(names)}" + (f" (shortcuts {keys})" if keys else "")
          + "; 'quit' or Ctrl-D ends.", file=stdout)
    print(env.unwrapped.describe(), file=stdout)
    while True:
        print(PROMPT, end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:  # end of input
            print(file=stdout)
            break
        if line.strip().lower() in QUIT_WORDS:
            break
        action = _resolve(line, names)
        if action is None:
            print(f"not an action: {line.strip()!r}; choose one of {', '.join(names)}", file=stdout)
            continue
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        print(f"{names[action]} -> reward {reward:+g} (total {total:+g})", file=stdout)
        if terminated or truncated:
            print(env.unwrapped.describe(), file=stdout)  # the final state (Blackjack: the dealer's whole hand)
            outcome = "won" if info.get("success") else "over"
            print(f"episode {outcome}; total reward {total:+g}. New episode.", file=stdout)
            env.reset()
            total = 0.0
        print(env.unwrapped.describe(), file=stdout)
    env.close()
    return total


HEADLESS_VIDEO_DRIVERS = {"dummy", "offscreen"}
"""SDL video drivers that open no window and deliver no key presses: waiting for keys would hang."""


def window_problem() -> str | None:
    """Why window mode cannot work here (one line that suggests ``--text``), or None.

    Checked before SDL starts, because SDL without a display does not always fail: it can print
    ``XDG_RUNTIME_DIR is invalid`` and then wait for keys that never come.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # keep the error the only line printed
    try:
        import pygame  # noqa: F401
    except ImportError:
        return (
            "window mode needs pygame, which is not installed; install it with "
            '`pip install "gym-cards-vlm[human]"`, or play in the terminal with --text'
        )
    driver = os.environ.get("SDL_VIDEODRIVER", "").strip().lower()
    if driver in HEADLESS_VIDEO_DRIVERS:
        return f"SDL_VIDEODRIVER={driver} opens no window and reads no keys; play in the terminal with --text"
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not driver:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return "no display found (neither DISPLAY nor WAYLAND_DISPLAY is set); play in the terminal with --text"
    return None


class NoWindowError(RuntimeError):
    """Window mode cannot run here; the message is one line that suggests ``--text``."""


def play_window(env_id: str, seed: int | None) -> None:
    """Play in a pygame window with the keyboard (see :func:`key_bindings`); Esc quits.

    Raises :class:`NoWindowError` when SDL fell back to a driver without a window (it does so
    when the display it was given cannot be reached), instead of waiting for keys forever.
    """
    env = gym.make(env_id, render_mode="human")
    import pygame  # window_problem() checked that it imports

    names = env.unwrapped.action_names
    bindings = key_bindings(names)
    env.reset(seed=seed)  # opens the window
    driver = pygame.display.get_driver() if pygame.display.get_init() else ""
    if driver in HEADLESS_VIDEO_DRIVERS:
        env.close()
        raise NoWindowError(
            f"no usable display (SDL fell back to its {driver!r} driver: no window, no keys); "
            "play in the terminal with --text"
        )
    print(f"{env_id}: keys " + ", ".join(f"{k!r}={names[v]}" for k, v in bindings.items()) + "; Esc quits.")
    total = 0.0
    while True:
        event = pygame.event.wait()
        if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
            break
        if event.type != pygame.KEYDOWN:
            continue
        key = {pygame.K_LEFT: "left", pygame.K_RIGHT: "right"}.get(event.key, event.unicode.lower())
        if key not in bindings:
            continue
        _, reward, terminated, truncated, info = env.step(bindings[key])
        total += reward
        pygame.display.set_caption(f"{env_id}  reward {reward:+g}  total {total:+g}")
        print(f"{names[bindings[key]]} -> reward {reward:+g} (total {total:+g})")
        if terminated or truncated:
            print(f"episode {'won' if info.get('success') else 'over'}; total {total:+g}")
            env.reset()
            total = 0.0
    env.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gym-cards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    play = commands.add_parser("play", help="play an environment with the keyboard and see the reward")
    play.add_argument("env_id", help=f"one of {', '.join(gym_cards.CARD_ENV_IDS)}")
    play.add_argument("--seed", type=int, default=None, help="seed of the first episode")
    play.add_argument("--text", action="store_true", help="play in the terminal instead of a window")
    commands.add_parser("list", help="list the registered environment ids")
    commands.add_parser(
        "alfworld-generate", help="generate ALFWorld game files (needs the [alfworld] extra)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["alfworld-generate"]:
        from gym_cards.alfworld.generate import main as generate_main

        return generate_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print("\n".join(gym_cards.ENV_IDS))
        return 0
    if args.env_id not in gym_cards.CARD_ENV_IDS:
        print(f"gym-cards: unknown env id {args.env_id!r}; choose one of {', '.join(gym_cards.CARD_ENV_IDS)}", file=sys.stderr)
        return 2
    try:
        return _play(args)
    except KeyboardInterrupt:
        print("\ngym-cards: stopped (Ctrl-C)", file=sys.stderr)
        return 130


def _play(args: argparse.Namespace) -> int:
    if args.text:
        play_text(args.env_id, args.seed, sys.stdin, sys.stdout)
        return 0
    problem = window_problem()
    if problem is None:
        try:
            play_window(args.env_id, args.seed)
            return 0
        except NoWindowError as error:
            problem = str(error)
        except Exception as error:  # pygame.error, without importing pygame at module level
            if type(error).__module__.split(".")[0] != "pygame":
                raise
            problem = f"the window could not be opened ({error}); play in the terminal with --text"
    print(f"gym-cards: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
