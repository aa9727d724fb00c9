"""The ``gym-cards`` command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gym_cards.cli import key_bindings


def _gym_cards(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    return subprocess.run(
        [sys.executable, "-m", "gym_cards.cli", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def test_play_in_the_terminal_shows_rewards():
    result = _gym_cards("play", "gym_cards/NumberLine-v0", "--seed", "1", "--text", stdin="+\nbogus\n-\n-\nquit\n")
    assert result.returncode == 0, result.stderr
    assert "Target number: 2. Current number: 3." in result.stdout
    assert "+ -> reward -1" in result.stdout
    assert "not an action: 'bogus'" in result.stdout
    assert "episode won" in result.stdout


def test_play_points24_by_typing_tokens():
    result = _gym_cards("play", "gym_cards/Points24-v0", "--seed", "0", "--text", stdin="=\nquit\n")
    assert result.returncode == 0, result.stderr
    assert "= -> reward -1" in result.stdout


def test_unknown_env_id_exits_with_a_message():
    result = _gym_cards("play", "gym_cards/Poker-v0", "--text")
    assert result.returncode == 2
    assert "unknown env id 'gym_cards/Poker-v0'" in result.stderr


def test_list_shows_every_id():
    result = _gym_cards("list")
    assert "gym_cards/Blackjack-v0" in result.stdout and "gym_cards/ALFWorld-v0" in result.stdout


def test_help():
    assert "play" in _gym_cards("--help").stdout


@pytest.mark.parametrize(
    "names, key, action",
    [(("-", "+"), "left", 0), (("stand", "hit"), "h", 1), (tuple(map(str, range(1, 14))) + ("=",), "q", 11)],
)
def test_key_bindings(names, key, action):
    assert key_bindings(names)[key] == action
