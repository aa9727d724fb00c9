"""Tests of vlm_agent.prompting: built-in and user templates, answers, expert demonstrations."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gym_cards  # noqa: F401  (registers the ids)
from vlm_agent.prompting.parsing import parse_action
from vlm_agent.prompting.templates import (
    ACTION_KEY,
    THOUGHTS_KEY,
    PromptTemplate,
    ReadoutField,
    chat_messages,
    load_prompt_template,
    template_from_mapping,
)
from vlm_agent.prompting.env_prompts import answer_from_info, expert_answer, known_env_ids, prompt_for

CARD_ENV_IDS = ["gym_cards/NumberLine-v0", "gym_cards/EZPoints-v0", "gym_cards/Points24-v0", "gym_cards/Blackjack-v0"]
ALFWORLD_COMMANDS = [
    "go to cabinet 1",
    "go to cabinet 10",
    "go to countertop 1",
    "open cabinet 1",
    "take apple 1 from countertop 1",
    "put apple 1 in/on fridge 1",
    "look",
    "inventory",
]


def _legal_action_sets() -> list[tuple[str, list[str]]]:
    """Every built-in env id with the legal actions its env offers (ALFWorld: typical commands)."""
    sets = [(env_id, gym.make(env_id).unwrapped.legal_actions()) for env_id in CARD_ENV_IDS]
    sets.append(
        (
            "gym_cards/Points24-v0",
            gym.make("gym_cards/Points24-v0", treat_face_cards_as_10=False).unwrapped.legal_actions(),
        )
    )
    sets.append(("gym_cards/ALFWorld-v0", ALFWORLD_COMMANDS))
    return sets


LEGAL_ACTION_SETS = _legal_action_sets()


def test_every_built_in_id_has_a_template() -> None:
    assert set(known_env_ids()) == set(CARD_ENV_IDS) | {"gym_cards/ALFWorld-v0"}


@pytest.mark.parametrize("cot", [True, False], ids=["cot", "action_only"])
@pytest.mark.parametrize(("env_id", "legal"), LEGAL_ACTION_SETS, ids=[f"{e}-{len(a)}" for e, a in LEGAL_ACTION_SETS])
def test_render_lists_actions_and_asks_for_keys_in_order(env_id: str, legal: list[str], cot: bool) -> None:
    template = prompt_for(env_id, cot=cot)
    text = template.render("STATE-DESCRIPTION", legal)
    for action in legal:
        assert f"'{action}'" in text
    assert "Your response should be a valid json file in the following format:" in text
    positions = [text.index(f'"{key}":') for key in template.answer_keys]
    assert positions == sorted(positions)
    assert template.answer_keys[-1] == ACTION_KEY
    assert (THOUGHTS_KEY in template.answer_keys) == cot
    assert (f'"{THOUGHTS_KEY}":' in text) == cot
    assert text.rstrip().endswith("}")


def test_paper_read_outs_are_asked_first() -> None:
    assert prompt_for("gym_cards/NumberLine-v0").answer_keys == (
        "current number",
        "target number",
        "thoughts",
        "action",
    )
    assert prompt_for("gym_cards/EZPoints-v0").answer_keys == ("cards", "current formula", "thoughts", "action")
    assert prompt_for("gym_cards/Points24-v0").answer_keys == ("cards", "current formula", "thoughts", "action")
    assert prompt_for("gym_cards/ALFWorld-v0").answer_keys == ("thoughts", "action")
    assert prompt_for("gym_cards/Blackjack-v0", cot=False).answer_keys == ("action",)


def test_small_action_sets_are_spelled_out_in_the_format() -> None:
    text = prompt_for("gym_cards/NumberLine-v0").render("", ["-", "+"])
    assert '"action": "-" or "+"' in text
    assert '"action": "stand" or "hit"' in prompt_for("gym_cards/Blackjack-v0").render("", ["stand", "hit"])


@pytest.mark.parametrize("env_id", CARD_ENV_IDS)
def test_card_prompts_are_image_only_unless_asked(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=3)
    state = env.unwrapped.describe()
    legal = env.unwrapped.legal_actions()
    assert state not in prompt_for(env_id).render(state, legal)
    assert state in prompt_for(env_id, show_state=True).render(state, legal)


def test_alfworld_prompt_always_shows_the_text_observation() -> None:
    state = "You are in the middle of a room. Your task is to: put a clean mug in coffeemachine."
    text = prompt_for("gym_cards/ALFWorld-v0").render(state, ALFWORLD_COMMANDS)
    assert state in text
    assert '"action": "{an admissible action}"' in text


def test_state_text_with_braces_is_inserted_verbatim() -> None:
    text = prompt_for("gym_cards/ALFWorld-v0").render("a {weird} state {0} {legal_actions}", ["look"])
    assert "a {weird} state {0} {legal_actions}" in text


def test_unknown_env_id_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="gym_cards/NumberLine-v0") as error:
        prompt_for("gym_cards/Poker-v0")
    assert "load_prompt_template" in str(error.value)


@pytest.mark.parametrize(("legal", "error"), [([], ValueError), ("hit", TypeError), ([1, 2], TypeError)])
def test_render_rejects_bad_legal_actions(legal: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="legal_actions"):
        prompt_for("gym_cards/Blackjack-v0").render("", legal)  # type: ignore[arg-type]


# -- answers ----------------------------------------------------------------------------------


def test_format_answer_orders_keys_like_the_prompt() -> None:
    template = prompt_for("gym_cards/EZPoints-v0")
    answer = template.format_answer("*", thoughts="6 * 2 = 12", readout={"current formula": "6", "cards": [6, 2]})
    decoded = json.loads(answer)
    assert list(decoded) == ["cards", "current formula", "thoughts", "action"]
    assert decoded == {"cards": [6, 2], "current formula": "6", "thoughts": "6 * 2 = 12", "action": "*"}
    assert prompt_for("gym_cards/EZPoints-v0", cot=False).format_answer("=") == '{"action": "="}'


@pytest.mark.parametrize(
    ("cot", "kwargs", "match"),
    [
        (True, {"readout": {"current number": "1", "target number": "2"}}, "thoughts"),
        (True, {"thoughts": "t", "readout": {"current number": "1"}}, "missing"),
        (True, {"thoughts": "t", "readout": {"current number": "1", "target number": "2", "x": "3"}}, "unexpected"),
        (True, {"thoughts": "t", "readout": {"current number": None, "target number": "2"}}, "current number"),
        (False, {"thoughts": "t"}, "action-only"),
    ],
)
def test_format_answer_rejects_wrong_fields(cot: bool, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prompt_for("gym_cards/NumberLine-v0", cot=cot).format_answer("+", **kwargs)


@settings(max_examples=40, deadline=None)
@given(thoughts=st.text(max_size=120), cot=st.booleans(), readout_text=st.text(max_size=20))
def test_every_legal_action_of_every_template_round_trips(thoughts: str, cot: bool, readout_text: str) -> None:
    for env_id, legal in LEGAL_ACTION_SETS:
        template = prompt_for(env_id, cot=cot)
        readout = {field.key: readout_text for field in template.readout}
        for index, action in enumerate(legal):
            answer = (
                template.format_answer(action, thoughts=thoughts, readout=readout)
                if cot
                else template.format_answer(action)
            )
            parsed = parse_action(answer, legal)
            assert parsed.index == index, (env_id, action, answer, parsed)


@pytest.mark.parametrize("cot", [True, False], ids=["cot", "action_only"])
@pytest.mark.parametrize("env_id", CARD_ENV_IDS)
def test_expert_answers_parse_to_the_expert_action(env_id: str, cot: bool) -> None:
    template = prompt_for(env_id, cot=cot)
    env = gym.make(env_id)
    steps = 0
    for seed in range(6):
        _, info = env.reset(seed=seed)
        done = False
        while not done:
            unwrapped = env.unwrapped
            legal = unwrapped.legal_actions()
            answer = expert_answer(template, env, info)
            decoded = json.loads(answer)
            assert list(decoded) == list(template.answer_keys)
            expert = unwrapped.expert_action()
            assert parse_action(answer, legal).index == expert
            if cot:
                for field in template.readout:
                    assert decoded[field.key] == field.value_from_info(info)
                assert decoded[THOUGHTS_KEY]
            _, _, terminated, truncated, info = env.step(expert)
            done = terminated or truncated
            steps += 1
    assert steps >= 6


def test_read_outs_match_the_state() -> None:
    info = {"target": 4, "current": 1, "success": False}
    answer = json.loads(answer_from_info(prompt_for("gym_cards/NumberLine-v0"), info, "+"))
    assert answer["current number"] == "1" and answer["target number"] == "4"
    assert "smaller" in answer["thoughts"]
    info = {"cards": ["10 of hearts", "2 of clubs"], "numbers": [10, 2], "formula": ["10", "+"], "target": 12}
    answer = json.loads(answer_from_info(prompt_for("gym_cards/EZPoints-v0"), info, "2"))
    assert answer["cards"] == [10, 2] and answer["current formula"] == "10 +"
    info = {
        "dealer_card": "K of spades",
        "player_cards": ["9 of hearts", "7 of clubs"],
        "player_sum": 16,
        "usable_ace": False,
    }
    answer = json.loads(answer_from_info(prompt_for("gym_cards/Blackjack-v0"), info, "hit"))
    assert answer["dealer card"] == "K of spades" and answer["player cards"] == ["9 of hearts", "7 of clubs"]
    assert answer["player total"] == "16"


def test_answer_from_info_names_a_missing_info_key() -> None:
    with pytest.raises(ValueError, match="'current'"):
        answer_from_info(prompt_for("gym_cards/NumberLine-v0"), {"target": 3}, "+")


def test_chat_messages_hold_an_image_then_the_text() -> None:
    assert chat_messages("hello") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hello"}]}
    ]
    with_answer = chat_messages("hello", answer='{"action": "+"}')
    assert with_answer[1] == {"role": "assistant", "content": [{"type": "text", "text": '{"action": "+"}'}]}


# -- user templates ---------------------------------------------------------------------------

MAZE_YAML = """\
env_id: my_envs/Maze-v0
cot: true
instruction: >-
  You are in a maze seen from above. Reach the green square.
  {state} You can choose between {legal_actions}.
thoughts_hint: first say where you are, then choose a move
readout:
  - {key: "position", hint: '"(x, y)"', info_key: position}
  - {key: "walls", hint: "[...]", info_key: walls, style: list}
"""


def test_yaml_template_renders_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "maze.yaml"
    path.write_text(MAZE_YAML)
    template = load_prompt_template(path)
    assert template.env_id == "my_envs/Maze-v0" and template.cot
    text = template.render("You stand at (1, 2).", ["north", "south", "east", "west"])
    assert "You stand at (1, 2)." in text and "['north', 'south', 'east', 'west']" in text
    assert '"position": "(x, y)",' in text
    answer = answer_from_info(template, {"position": (1, 2), "walls": ["north"]}, "east")
    assert json.loads(answer) == {
        "position": "(1, 2)",
        "walls": ["north"],
        "thoughts": "I choose 'east'.",
        "action": "east",
    }
    assert parse_action(answer, ["north", "south", "east", "west"]).action_text == "east"


def test_json_template_matches_the_same_yaml(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "maze.yaml").write_text(MAZE_YAML)
    (tmp_path / "maze.json").write_text(json.dumps(yaml.safe_load(MAZE_YAML)))
    assert load_prompt_template(tmp_path / "maze.json") == load_prompt_template(tmp_path / "maze.yaml")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"env_id": "x/Y-v0", "instruction": "Go {where}.", "thoughts_hint": "t"}, r"\{where\}"),
        ({"env_id": "x/Y-v0", "instruction": "Go {state!r}.", "thoughts_hint": "t"}, "conversions"),
        ({"env_id": "x/Y-v0", "instruction": "Go {state.upper}.", "thoughts_hint": "t"}, "state.upper"),
        ({"env_id": "x/Y-v0", "instruction": "Go {legal_actions:>10}.", "thoughts_hint": "t"}, "format specs"),
        ({"env_id": "x/Y-v0", "instruction": "Go {.", "thoughts_hint": "t"}, "literal braces"),
        ({"env_id": "x/Y-v0", "instruction": "Go }.", "thoughts_hint": "t"}, "literal braces"),
        ({"env_id": "x/Y-v0", "instruction": "Go {0}.", "thoughts_hint": "t"}, r"\{0\}"),
        ({"env_id": "x/Y-v0", "instruction": "Go."}, "thoughts_hint"),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "colour": "red"}, "unknown keys"),
        ({"instruction": "Go.", "thoughts_hint": "t"}, "missing required keys"),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "cot": False, "readout": [{"key": "a"}]}, "cot: true"),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "readout": [{"hint": "x"}]}, "needs 'key'"),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "readout": [{"key": "action"}]}, "reserved"),
        (
            {"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "readout": [{"key": "a", "style": "csv"}]},
            "style",
        ),
        (
            {"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "readout": [{"key": "a"}, {"key": "a"}]},
            "unique",
        ),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "thoughts_hint": "t", "readout": {"key": "a"}}, "list"),
        ({"env_id": "x/Y-v0", "instruction": "Go.", "cot": "yes", "thoughts_hint": "t"}, "cot"),
        ({"env_id": "", "instruction": "Go.", "thoughts_hint": "t"}, "env_id"),
        (["env_id", "instruction"], "mapping"),
    ],
)
def test_bad_user_templates_raise_clear_errors(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        template_from_mapping(data, source="my.yaml")


def test_escaped_braces_are_literal() -> None:
    template = PromptTemplate("x/Y-v0", cot=False, instruction="Answer in {{json}}: {legal_actions}")
    assert template.render("", ["a", "b"]).startswith("Answer in {json}: ['a', 'b']")


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("t.yaml", "env_id: [unclosed", ValueError, "not valid YAML"),
        ("t.json", "{", ValueError, "not valid JSON"),
        ("t.txt", "{}", ValueError, ".yaml, .yml or .json"),
        ("t.yml", "- just\n- a list\n", ValueError, "mapping"),
    ],
)
def test_unreadable_template_files_raise(
    tmp_path: Path, name: str, content: str, error: type[Exception], match: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(error, match=match):
        load_prompt_template(path)


def test_missing_template_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prompt_template(tmp_path / "nope.yaml")


def test_readout_without_info_key_needs_explicit_values() -> None:
    template = PromptTemplate("x/Y-v0", cot=True, instruction="Go.", thoughts_hint="t", readout=(ReadoutField("a"),))
    with pytest.raises(ValueError, match="no info_key"):
        answer_from_info(template, {"a": 1}, "left")
    assert json.loads(template.format_answer("left", thoughts="t", readout={"a": "1"}))["a"] == "1"


def test_alfworld_expert_answers_parse_to_the_expert_command() -> None:
    pytest.importorskip("alfworld", reason="the ALFWorld env needs the alfworld extra")
    template = prompt_for("gym_cards/ALFWorld-v0")
    env = gym.make("gym_cards/ALFWorld-v0")
    _, info = env.reset(seed=0)
    for _ in range(8):
        unwrapped = env.unwrapped
        legal = unwrapped.legal_actions()
        prompt = template.render(unwrapped.describe(), legal)
        assert unwrapped.describe() in prompt and all(f"'{command}'" in prompt for command in legal)
        answer = expert_answer(template, env, info)
        assert info["task"] in json.loads(answer)[THOUGHTS_KEY]
        expert = unwrapped.expert_action()
        assert parse_action(answer, legal).index == expert
        _, _, terminated, truncated, info = env.step(expert)
        if terminated or truncated:
            break
