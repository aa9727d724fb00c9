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


# ---- window mode where no window can open: one line, exit 1, never a hang -------------------------
WINDOW_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")


def _play_window(*, set_env: dict[str, str], without_pygame: bool = False) -> subprocess.CompletedProcess:
    """``gym-cards play gym_cards/NumberLine-v0`` in window mode, in a child with the given display
    variables; the time-out turns a hang into a failure."""
    env = {k: v for k, v in os.environ.items() if k not in WINDOW_VARIABLES} | set_env
    code = "import sys\n"
    if without_pygame:
        code += "sys.modules['pygame'] = None  # what `import pygame` meets when it is not installed\n"
    code += "from gym_cards.cli import main\nsys.exit(main(['play', 'gym_cards/NumberLine-v0']))\n"
    return subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True, env=env, timeout=60)


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and lines, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "--text" in lines[-1] and lines[-1].startswith("gym-cards: ")
    return lines[-1]


def test_window_mode_without_pygame_names_the_extra():
    line = _one_line(_play_window(set_env={"DISPLAY": ":0"}, without_pygame=True))
    assert 'pip install "gym-cards-vlm[human]"' in line
    assert len(_play_window(set_env={}, without_pygame=True).stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY / WAYLAND_DISPLAY are how Linux finds a display")
def test_window_mode_without_a_display_says_so_before_sdl_starts():
    pytest.importorskip("pygame")
    result = _play_window(set_env={})
    assert "no display found" in _one_line(result)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""  # no SDL chatter either


def test_window_mode_with_a_headless_video_driver_is_refused():
    pytest.importorskip("pygame")
    assert "SDL_VIDEODRIVER=dummy" in _one_line(_play_window(set_env={"SDL_VIDEODRIVER": "dummy"}))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an X display name that leads nowhere")
def test_window_mode_with_an_unreachable_display_does_not_hang():
    pytest.importorskip("pygame")
    # SDL cannot reach the display; it either fails (pygame.error) or falls back to its offscreen
    # driver, which would wait for keys forever. Either way: one line of ours, last, and exit 1.
    line = _one_line(_play_window(set_env={"DISPLAY": ":4917"}))
    assert "display" in line or "window could not be opened" in line


@pytest.mark.parametrize(
    "names, key, action",
    [(("-", "+"), "left", 0), (("stand", "hit"), "h", 1), (tuple(map(str, range(1, 14))) + ("=",), "q", 11)],
)
def test_key_bindings(names, key, action):
    assert key_bindings(names)[key] == action


# ---- the terminal game: a prompt, the shortcuts, the final state, Ctrl-C -------------------------
def test_text_play_prompts_announces_shortcuts_and_shows_the_dealers_final_hand():
    result = _gym_cards("play", "gym_cards/Blackjack-v0", "--seed", "3", "--text", stdin="s\nquit\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "gym_cards/Blackjack-v0: actions stand, hit (shortcuts s: stand, h: hit); 'quit' or Ctrl-D ends."
    assert lines[2].startswith("action> stand -> reward")
    # The hand is over: the dealer's hidden card and whole hand are shown before the next deal.
    assert lines[3].startswith("Dealer's cards: 4 of clubs, ") and "(total " in lines[3]
    assert lines[4].startswith("episode won; total reward +1")
    assert lines[5].startswith("Dealer shows: ")


def test_text_play_ends_at_end_of_input():
    result = _gym_cards("play", "gym_cards/Points24-v0", "--seed", "0", "--text", stdin="")
    assert result.returncode == 0 and result.stderr == ""
    assert "(shortcuts 0: 10, Enter: =)" in result.stdout.splitlines()[0]


def test_ctrl_c_in_text_play_is_one_line():
    import signal
    import time

    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    process = subprocess.Popen([sys.executable, "-m", "gym_cards.cli", "play", "gym_cards/NumberLine-v0", "--text"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    deadline = time.time() + 60
    seen = ""
    while "action> " not in seen and time.time() < deadline:
        seen += process.stdout.read(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr and stderr.strip() == "gym-cards: stopped (Ctrl-C)"


def test_the_command_imports_no_torch():
    probe = ("import sys, gym_cards.cli\n"
             "print(','.join(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
