"""The ``gym-cards`` command: play an environment by hand, list them, generate ALFWorld games."""

from __future__ import annotations

import argparse
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


def play_text(env_id: str, seed: int | None, stdin: TextIO, stdout: TextIO) -> float:
    """Play in the terminal: the state is printed as text, actions are typed. Returns the total reward."""
    env = gym.make(env_id)
    names = env.unwrapped.action_names
    _, _ = env.reset(seed=seed)
    total = 0.0
    print(f"{env_id}: actions {', '.join(names)}; 'quit' ends.", file=stdout)
    print(env.unwrapped.describe(), file=stdout)
    for line in stdin:
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
            outcome = "won" if info.get("success") else "over"
            print(f"episode {outcome}; total reward {total:+g}. New episode.", file=stdout)
            env.reset()
            total = 0.0
        print(env.unwrapped.describe(), file=stdout)
    env.close()
    return total


def play_window(env_id: str, seed: int | None) -> None:
    """Play in a pygame window with the keyboard (see :func:`key_bindings`); Esc quits."""
    env = gym.make(env_id, render_mode="human")
    import pygame  # the env's human render imported it already (or raised naming the extra)

    names = env.unwrapped.action_names
    bindings = key_bindings(names)
    print(f"{env_id}: keys " + ", ".join(f"{k!r}={names[v]}" for k, v in bindings.items()) + "; Esc quits.")
    env.reset(seed=seed)
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
    if args.text:
        play_text(args.env_id, args.seed, sys.stdin, sys.stdout)
    else:
        play_window(args.env_id, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
