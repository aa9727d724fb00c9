"""Tests of vlm_agent.prompting.parsing: model answers (real-looking and hostile) to legal actions."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm_agent.prompting.parsing import ERROR_REASONS, MAX_TEXT_CHARS, ParsedAction, parse_action
from vlm_agent.prompting.answer_lexer import MAX_SCANNED_TOKENS
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy, ResolvedAction, resolve_action

NUMBER_LINE = ["-", "+"]
BLACKJACK = ["stand", "hit"]
EZPOINTS = [str(n) for n in range(1, 11)] + ["+", "*", "="]
POINTS24 = [str(n) for n in range(1, 11)] + ["+", "-", "*", "/", "(", ")", "="]
ALFWORLD = [
    "go to cabinet 1",
    "go to cabinet 10",
    "go to countertop 1",
    "open cabinet 1",
    "take apple 1 from countertop 1",
    "put apple 1 in/on fridge 1",
    "look",
    "inventory",
    "examine countertop 1",
]

# (id, answer text, legal actions, expected action text or None, expected error)
CASES = [
    # -- well-formed answers, as LLaVA / Qwen-VL write them
    (
        "llava_cot_number_line",
        '{\n "current number": "3", \n"target number": "5", \n"thoughts": "The current number is 3 and the '
        'target is 5. Since 3 < 5, I should choose \\"+\\" rather than \\"-\\".", \n"action": "+" \n}',
        NUMBER_LINE,
        "+",
        None,
    ),
    (
        "qwen_fenced_json",
        '```json\n{\n  "current number": "4",\n  "target number": "1",\n  "thoughts": "4 is larger than 1, '
        'so move left.",\n  "action": "-"\n}\n```',
        NUMBER_LINE,
        "-",
        None,
    ),
    (
        "prose_around_json",
        'Sure! Here is my answer:\n\n{"thoughts": "I have 12 and the dealer shows a 10; I will hit.", '
        '"action": "hit"}\n\nLet me know if you need anything else.',
        BLACKJACK,
        "hit",
        None,
    ),
    ("action_only", '{"action": "stand"}', BLACKJACK, "stand", None),
    ("single_quotes", "{'thoughts': 'Total is 19, so I stand.', 'action': 'stand'}", BLACKJACK, "stand", None),
    (
        "single_quotes_with_apostrophe",
        "{'thoughts': 'I don't want to bust', 'action': 'stand'}",
        BLACKJACK,
        "stand",
        None,
    ),
    ("wrong_case_key_and_value", '{"Action": "HIT"}', BLACKJACK, "hit", None),
    ("upper_case_key", '{"ACTION": "Stand"}', BLACKJACK, "stand", None),
    (
        "trailing_commas",
        '{"cards": [10, 2,], "current formula": "10 +", "thoughts": "append 2", "action": "2",}',
        EZPOINTS,
        "2",
        None,
    ),
    ("ten_not_one", '{"thoughts": "10 then *", "action": "10"}', EZPOINTS, "10", None),
    ("one_not_ten", '{"thoughts": "10 is wrong, 1 is right", "action": "1"}', EZPOINTS, "1", None),
    ("number_without_quotes", '{"action": 10}', EZPOINTS, "10", None),
    (
        "cabinet_10_not_1",
        '{"thoughts": "The mug may be in cabinet 1.", "action": "go to cabinet 10"}',
        ALFWORLD,
        "go to cabinet 10",
        None,
    ),
    (
        "cabinet_1_not_10",
        '{"thoughts": "Not cabinet 10.", "action": "go to cabinet 1"}',
        ALFWORLD,
        "go to cabinet 1",
        None,
    ),
    ("alfworld_full_stop", '{"action": "Put apple 1 in/on fridge 1."}', ALFWORLD, "put apple 1 in/on fridge 1", None),
    ("alfworld_extra_spaces", '{"action": "  go to   countertop 1 "}', ALFWORLD, "go to countertop 1", None),
    ("open_paren", '{"action": "("}', POINTS24, "(", None),
    ("close_paren", "{'action': ')'}", POINTS24, ")", None),
    ("braces_from_the_hint", '{"action": "{+}"}', POINTS24, "+", None),
    ("quoted_inside_string", '{"action": "\'*\'"}', POINTS24, "*", None),
    ("escaped_quotes_inside_string", '{"action": "\\"hit\\""}', BLACKJACK, "hit", None),
    ("brackets", '{"action": "[10]"}', POINTS24, "10", None),
    ("value_on_next_line", '{\n  "action":\n    "hit"\n}', BLACKJACK, "hit", None),
    ("bare_key_json5", '{action: "+"}', NUMBER_LINE, "+", None),
    ("prose_action_line", "I read the cards and think I should stop.\nAction: stand\n", BLACKJACK, "stand", None),
    ("markdown_action_line", "**Thoughts:** 13 against a 2.\n**Action:** stand\n", BLACKJACK, "stand", None),
    ("bare_answer", "hit", BLACKJACK, "hit", None),
    ("bare_quoted_answer", '"+"', NUMBER_LINE, "+", None),
    ("bare_fenced_answer", "```\nstand\n```", BLACKJACK, "stand", None),
    ("contained_in_sentence", '{"action": "I pick 7 because 7 + 5 = 12"}', EZPOINTS, None, "ambiguous"),
    ("contained_single", '{"action": "I will go to cabinet 10 now"}', ALFWORLD, "go to cabinet 10", None),
    (
        "contained_longest_wins",
        '{"action": "take apple 1 from countertop 1 please"}',
        ALFWORLD,
        "take apple 1 from countertop 1",
        None,
    ),
    ("contained_with_explanation", '{"action": "hit (take another card)"}', BLACKJACK, "hit", None),
    # -- thoughts that mention other actions: only the action field counts
    (
        "thoughts_mention_other_action",
        '{"thoughts": "I could choose \\"-\\" but \\"+\\" is closer. action: -", "action": "+"}',
        NUMBER_LINE,
        "+",
        None,
    ),
    (
        "thoughts_hold_a_fake_field",
        '{"thoughts": "Not \'action\': \'stand\' this time", "action": "hit"}',
        BLACKJACK,
        "hit",
        None,
    ),
    ("escaped_fake_field", '{"thoughts": "{\\"action\\": \\"stand\\"}", "action": "hit"}', BLACKJACK, "hit", None),
    ("same_field_twice", '{"action": "hit"}\n{"action": "HIT"}', BLACKJACK, "hit", None),
    ("complete_then_truncated_field", '{"action": "hit"} {"action": "st', BLACKJACK, "hit", None),
    # -- unicode
    ("fullwidth_plus", '{"action": "\uff0b"}', NUMBER_LINE, "+", None),
    ("curly_quotes", "{\u201caction\u201d: \u201chit\u201d}", BLACKJACK, "hit", None),
    (
        "curly_quotes_inside_valid_json",
        '{"thoughts": "\u201cstand\u201d is safer", "action": "hit"}',
        BLACKJACK,
        "hit",
        None,
    ),
    (
        "emoji_thoughts",
        '{"thoughts": "\U0001f0cf 19 vs \U0001f0a1 \u2014 stay", "action": "stand"}',
        BLACKJACK,
        "stand",
        None,
    ),
    (
        "non_latin_thoughts",
        '{"thoughts": "\u0938\u0902\u0916\u094d\u092f\u093e \u6570\u5b57", "action": "-"}',
        NUMBER_LINE,
        "-",
        None,
    ),
    # -- unusable answers
    ("empty", "", BLACKJACK, None, "empty"),
    ("whitespace", "  \n\t ", BLACKJACK, None, "empty"),
    ("prose_without_action", "I think hitting is the best choice here.", BLACKJACK, None, "no_action"),
    ("json_without_action", '{"thoughts": "hmm", "move": "hit"}', BLACKJACK, None, "no_action"),
    ("prose_key_is_not_a_field", "My action: hit", BLACKJACK, None, "no_action"),
    ("illegal_action", '{"action": "double down"}', BLACKJACK, None, "illegal_action"),
    ("illegal_number", '{"action": "11"}', EZPOINTS, None, "illegal_action"),
    ("action_is_a_prefix_of_the_value", '{"action": "open cabinet 12"}', ALFWORLD, None, "illegal_action"),
    ("action_inside_a_word", '{"action": "whiten"}', BLACKJACK, None, "illegal_action"),
    ("empty_value", '{"action": ""}', BLACKJACK, None, "illegal_action"),
    ("hint_copied", '{"action": "{an admissible action}"}', ALFWORLD, None, "illegal_action"),
    ("two_actions_in_value", '{"action": "hit or stand"}', BLACKJACK, None, "ambiguous"),
    ("format_echo", '{"action": "-" or "+"}', NUMBER_LINE, None, "ambiguous"),
    ("minus_one", '{"action": "-1"}', POINTS24, None, "ambiguous"),
    ("empty_parens", '{"action": "()"}', POINTS24, None, "ambiguous"),
    ("two_fields_disagree", '{"action": "stand"}\n{"action": "hit"}', BLACKJACK, None, "ambiguous"),
    ("format_echo_then_answer", 'Format: "action": "-" or "+"\n{"action": "+"}', NUMBER_LINE, None, "ambiguous"),
    # -- truncated by the token limit
    (
        "cut_in_thoughts",
        '{"current number": "3", "target number": "5", "thoughts": "The current number is 3, which is less than',
        NUMBER_LINE,
        None,
        "truncated",
    ),
    ("cut_after_thoughts", '{"thoughts": "I will pick ten.",', EZPOINTS, None, "truncated"),
    ("cut_in_value_prefix_of_ten", '{"thoughts": "x", "action": "1', EZPOINTS, None, "truncated"),
    ("cut_bare_value_prefix_of_ten", '{"thoughts": "x", "action": 1', EZPOINTS, None, "truncated"),
    ("cut_in_value_cabinet_1", '{"action": "go to cabinet 1', ALFWORLD, None, "truncated"),
    ("cut_in_value_partial_word", '{"action": "sta', BLACKJACK, None, "truncated"),
    ("cut_after_complete_value", '{"thoughts": "x", "action": "hit"', BLACKJACK, "hit", None),
    ("cut_in_value_no_longer_action", '{"action": "stand', BLACKJACK, "stand", None),
    ("cut_in_key", '{"thoughts": "x", "act', BLACKJACK, None, "truncated"),
    # -- a list value is read as a whole, never as its first element
    ("list_of_two_actions", '{"action": ["-", "+"]}', NUMBER_LINE, None, "ambiguous"),
    ("list_of_two_numbers", '{"thoughts": "x", "action": ["1", "10"]}', EZPOINTS, None, "ambiguous"),
    ("list_of_one_action", '{"action": ["+"]}', NUMBER_LINE, "+", None),
    ("list_cut_off", '{"action": ["-", "+', NUMBER_LINE, None, "truncated"),
    # -- Markdown emphasis, as chat models write it, at the very end of the answer
    ("markdown_bold_key_at_end", "**Thoughts:** 12 vs 10.\n**Action:** hit", BLACKJACK, "hit", None),
    ("markdown_bold_value_at_end", "Action: **hit**", BLACKJACK, "hit", None),
    ("markdown_bold_key_and_value", "**Action:** **stand**", BLACKJACK, "stand", None),
    ("markdown_bold_key_star_action", "**Action:** *", POINTS24, "*", None),
    ("markdown_italic_key", "*Action:* +", NUMBER_LINE, "+", None),
    ("markdown_list_bold_key", "- **Action:** stand", BLACKJACK, "stand", None),
    ("markdown_bold_number_is_complete", "Action: **1**", EZPOINTS, "1", None),
    ("markdown_bold_cut_number", "Action: **1", EZPOINTS, None, "truncated"),
    ("bare_bold_answer", "**hit**", BLACKJACK, "hit", None),
    # -- math signs
    ("times_sign", '{"action": "\u00d7"}', POINTS24, "*", None),
    ("division_sign", '{"action": "\u00f7"}', POINTS24, "/", None),
    ("minus_sign", '{"action": "\u2212"}', POINTS24, "-", None),
    ("minus_sign_number_line", "Action: \u2212", NUMBER_LINE, "-", None),
    # -- invisible characters inside a value, a key or a whole answer
    ("zero_width_space_in_number", '{"action": "1\u200b0"}', EZPOINTS, "10", None),
    ("soft_hyphen_in_number", '{"action": "1\u00ad0"}', EZPOINTS, "10", None),
    ("word_joiner_in_number", '{"action": "1\u20600"}', EZPOINTS, "10", None),
    ("nul_in_number", '{"action": "1\x000"}', EZPOINTS, "10", None),
    ("zero_width_in_unquoted_number", '{"action": 1\u200b0}', EZPOINTS, "10", None),
    ("zero_width_in_key", '{"act\u200bion"\u200b: "hit"}', BLACKJACK, "hit", None),
    ("byte_order_mark_first", '\ufeff{"action": "stand"}', BLACKJACK, "stand", None),
    ("bare_answer_with_zero_width", "\u200bhit\u2060", BLACKJACK, "hit", None),
    ("cut_after_invisible_prefix_of_ten", '{"action": "1\u200b', EZPOINTS, None, "truncated"),
    ("only_invisible", "\u200b\u2060\x00", BLACKJACK, None, "empty"),
]


@pytest.mark.parametrize(
    ("text", "legal", "expected_action", "expected_error"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_answer_table(text: str, legal: list[str], expected_action: str | None, expected_error: str | None) -> None:
    parsed = parse_action(text, legal)
    assert parsed.error == expected_error, parsed
    assert parsed.action_text == expected_action, parsed
    if expected_action is None:
        assert parsed.index is None and not parsed.valid
    else:
        assert parsed.index == legal.index(expected_action) and parsed.valid


# (answer, legal actions, the value's text at ParsedAction.span, the text from action_part_start on)
SPANS = [
    ('{"thoughts": "x", "action": "hit"}', BLACKJACK, "hit", '"action": "hit"}'),
    ("{'thoughts': 'x', 'action': 'stand'}", BLACKJACK, "stand", "'action': 'stand'}"),
    ("{\u201caction\u201d: \u201chit\u201d}", BLACKJACK, "hit", "\u201caction\u201d: \u201chit\u201d}"),
    ('{"Action" : "HIT"}', BLACKJACK, "HIT", '"Action" : "HIT"}'),
    ('{"action": 10}', EZPOINTS, "10", '"action": 10}'),
    ('{"action": "\\"hit\\""}', BLACKJACK, '\\"hit\\"', '"action": "\\"hit\\""}'),
    ('{"action": "hit now"}', BLACKJACK, "hit now", '"action": "hit now"}'),
    ('{"action": ["+"]}', NUMBER_LINE, '["+"]', '"action": ["+"]}'),
    ("{action: '+'}", NUMBER_LINE, "+", "action: '+'}"),
    ("So I stop.\nAction: stand\n", BLACKJACK, "stand", "Action: stand\n"),
    ("**Thoughts:** go.\n**Action:** hit", BLACKJACK, "hit", "Action:** hit"),
    ("Action: **hit**", BLACKJACK, "**hit**", "Action: **hit**"),
    ('```json\n{"action": "10",}\n```', EZPOINTS, "10", '"action": "10",}\n```'),
    ('{"thoughts": "a\u200bb", "action": "1\u200b0"}', EZPOINTS, "1\u200b0", '"action": "1\u200b0"}'),
    ('{"action": "hit"}\n{"action": "hit"}', BLACKJACK, "hit", '"action": "hit"}\n{"action": "hit"}'),
    ('{"thoughts": "x", "action": "stand', BLACKJACK, "stand", '"action": "stand'),
    # Bare answers are all action.
    ("hit", BLACKJACK, "hit", "hit"),
    ('  "+"\n', NUMBER_LINE, "+", '  "+"\n'),
    ("```\nstand\n```", BLACKJACK, "stand", "```\nstand\n```"),
    ("**hit**.", BLACKJACK, "hit", "**hit**."),
    ("\u200bhit", BLACKJACK, "\u200bhit", "\u200bhit"),
]


@pytest.mark.parametrize(("text", "legal", "value", "action_part"), SPANS)
def test_valid_results_say_where_the_action_is(text: str, legal: list[str], value: str, action_part: str) -> None:
    parsed = parse_action(text, legal)
    assert parsed.valid, parsed
    assert parsed.span is not None and parsed.action_part_start is not None
    assert text[parsed.span[0] : parsed.span[1]] == value
    assert text[parsed.action_part_start :] == action_part


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_positions_exactly_when_valid(case: tuple) -> None:
    _, text, legal, _, _ = case
    parsed = parse_action(text, legal)
    assert (parsed.span is None) == (parsed.action_part_start is None) == (not parsed.valid)
    if parsed.valid:
        start, end = parsed.span
        assert 0 <= parsed.action_part_start <= start < end <= len(text)


def test_invisible_character_class_holds_every_format_character() -> None:
    """parsing only scans the Unicode blocks known to hold Cf characters; a newer Unicode that adds one
    elsewhere must fail here, not silently read "1\\u2xxx0" as "1"."""
    everything = "".join(chr(code) for code in range(0x110000) if unicodedata.category(chr(code)) == "Cf")
    assert parse_action('{"action": "1' + everything + '0"}', EZPOINTS).action_text == "10"
    assert parse_action('{"action": "1\\u200c0"}', EZPOINTS).action_text == "10"  # escaped: decoded first


def test_match_kinds_are_reported() -> None:
    assert parse_action('{"action": "hit"}', BLACKJACK).matched_by == "exact"
    assert parse_action('{"action": "HIT"}', BLACKJACK).matched_by == "normalized"
    assert parse_action('{"action": "hit now"}', BLACKJACK).matched_by == "contained"
    assert parse_action("hit", BLACKJACK).matched_by == "bare"
    assert parse_action('{"action": "double"}', BLACKJACK).value == "double"


def test_legal_actions_equal_after_normalization_prefer_the_exact_one() -> None:
    legal = ["Hit", "hit"]
    assert parse_action('{"action": "hit"}', legal).index == 1
    assert parse_action('{"action": "Hit"}', legal).index == 0
    assert parse_action('{"action": "HIT"}', legal).error == "ambiguous"


@pytest.mark.parametrize(
    "hostile",
    [
        '{"action": "' + '"action": "' * 50_000,
        "\\" * 200_000,
        '"' * 200_001,
        "'" * 200_001,
        "{" * 200_000,
        ", 'action': " * 20_000,
        '{"action": ' + "+ " * 100_000 + "}",
        '{"action": "' + "-" * 100_000 + '"}',
        ":" * 200_000,
        "action:\n" * 30_000,
        '"action":' * 30_000 + '"hit"',
        "\u0000\ud7ff\U0010ffff" * 30_000,
    ],
    ids=[
        "repeated_open_fields",
        "backslashes",
        "double_quotes",
        "single_quotes",
        "braces",
        "many_single_quoted_keys",
        "long_bare_value",
        "long_string_value",
        "colons",
        "bare_keys",
        "chained_keys",
        "odd_code_points",
    ],
)
@pytest.mark.timeout(30)  # guards against a hang only; speed itself lives in no test
def test_hostile_long_inputs_give_a_result(hostile: str) -> None:
    parsed = parse_action(hostile, POINTS24 + ["hit"])
    assert (parsed.index is None) == (parsed.error is not None)
    assert parsed.error is None or parsed.error in ERROR_REASONS


def test_long_thoughts_before_the_action() -> None:
    thoughts = "I count the cards again. " * 600  # 15,000 characters, inside MAX_TEXT_CHARS
    assert parse_action(f'{{"thoughts": "{thoughts}", "action": "hit"}}', BLACKJACK).action_text == "hit"


def test_text_beyond_the_read_limit_reads_as_cut_off() -> None:
    thoughts = "x" * MAX_TEXT_CHARS
    assert parse_action(f'{{"thoughts": "{thoughts}", "action": "hit"}}', BLACKJACK).error == "truncated"
    assert parse_action(" " * MAX_TEXT_CHARS + "hit", BLACKJACK).error == "truncated"
    assert parse_action("no answer. " * 2_000 + "Action: hit", BLACKJACK).error == "truncated"


def test_only_the_first_marks_are_scanned() -> None:
    """A text of thousands of marks before the answer reads as cut off where the scan stops."""
    assert parse_action("," * MAX_SCANNED_TOKENS + '{"action": "hit"}', BLACKJACK).error == "truncated"
    assert parse_action("," * (MAX_SCANNED_TOKENS - 10) + '{"action": "hit"}', BLACKJACK).action_text == "hit"


@pytest.mark.parametrize(
    "text",
    [
        '{"thoughts": "' + "I count again, don't I? " * 4_000 + '", "action": "hit"}',  # 96,000 characters
        ":" * 90_000 + '{"action": "hit"}',
        "'" * 90_000 + "hit",
        "\u200b" * 90_000 + "hit",
    ],
    ids=["long_thoughts", "colons", "apostrophes", "zero_width"],
)
def test_a_long_answer_reads_as_cut_off_at_the_examined_part(text: str) -> None:
    """Only the bounded head is examined (what keeps every call cheap): what lies past it is unread."""
    parsed = parse_action(text, BLACKJACK)
    assert parsed.error == "truncated", parsed


@pytest.mark.parametrize(
    ("legal", "error"),
    [([], ValueError), ("hit", TypeError), (["hit", 3], TypeError)],
)
def test_bad_legal_actions_raise(legal: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="legal_actions"):
        parse_action('{"action": "hit"}', legal)  # type: ignore[arg-type]


def test_non_string_text_raises() -> None:
    with pytest.raises(TypeError, match="str"):
        parse_action(None, BLACKJACK)  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        '"',
        "'",
        ":",
        ",",
        "[",
        "]",
        "\\",
        "\n",
        " ",
        "action",
        '"action"',
        "'action'",
        "Action",
        "hit",
        "stand",
        "10",
        "1",
        "+",
        "(",
        ")",
        "```json",
        "\u201c",
        "\u2019",
        "thoughts",
        ".",
        "-",
    ]
)
_TEXTS = st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=60).map("".join))
_LEGAL_SETS = st.sampled_from([NUMBER_LINE, BLACKJACK, EZPOINTS, POINTS24, ALFWORLD])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, legal=_LEGAL_SETS)
def test_any_text_gives_a_well_formed_result(text: str, legal: list[str]) -> None:
    parsed = parse_action(text, legal)
    assert isinstance(parsed, ParsedAction)
    assert parsed.index is None or 0 <= parsed.index < len(legal)
    assert (parsed.index is None) == (parsed.error is not None)
    assert parsed.error is None or parsed.error in ERROR_REASONS
    assert parsed.action_text == (None if parsed.index is None else legal[parsed.index])
    assert (parsed.span is None) == (parsed.action_part_start is None) == (parsed.index is None)
    if parsed.span is not None:
        assert 0 <= parsed.action_part_start <= parsed.span[0] <= parsed.span[1] <= len(text)


_ACTION_TEXT = st.text(min_size=1, max_size=30).filter(lambda a: a == a.strip() and a.strip() != "")


@settings(max_examples=200, deadline=None)
@given(
    legal=st.lists(_ACTION_TEXT, min_size=1, max_size=12, unique=True),
    data=st.data(),
    thoughts=st.text(max_size=200),
)
def test_round_trip_with_arbitrary_action_texts(legal: list[str], data: st.DataObject, thoughts: str) -> None:
    action = data.draw(st.sampled_from(legal))
    answer = json.dumps({"thoughts": thoughts, "action": action}, ensure_ascii=False)
    parsed = parse_action(answer, legal)
    assert parsed.index == legal.index(action)
    assert parsed.span is not None
    assert answer[parsed.span[0] : parsed.span[1]] == json.dumps(action, ensure_ascii=False)[1:-1]
    assert parsed.action_part_start is not None and answer[parsed.action_part_start :].startswith('"action": ')


@settings(max_examples=150, deadline=None)
@given(
    text=_TEXTS,
    legal=_LEGAL_SETS,
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["random", "penalty"]),
    fallback=st.integers(0, 1),
)
def test_resolve_never_returns_an_illegal_index(
    text: str, legal: list[str], seed: int, mode: str, fallback: int
) -> None:
    policy = InvalidActionPolicy(mode=mode, fallback=fallback, penalty=0.5)  # type: ignore[arg-type]
    parsed = parse_action(text, legal)
    resolved = resolve_action(parsed, legal, policy, np.random.default_rng(seed))
    assert 0 <= resolved.index < len(legal)
    assert resolved.invalid == (parsed.index is None)
    if parsed.index is not None:
        assert resolved == (parsed.index, False, 0.0)
    elif mode == "penalty":
        assert resolved == (fallback, True, -0.5)


# -- resolve_action -------------------------------------------------------------------------


def test_random_policy_is_seeded_reproducible_and_covers_every_action() -> None:
    invalid = parse_action("no idea", POINTS24)
    policy = InvalidActionPolicy("random")
    rng_a, rng_b = np.random.default_rng(123), np.random.default_rng(123)
    draws_a = [resolve_action(invalid, POINTS24, policy, rng_a) for _ in range(3400)]
    draws_b = [resolve_action(invalid, POINTS24, policy, rng_b) for _ in range(3400)]
    assert draws_a == draws_b
    rng_c = np.random.default_rng(124)
    assert draws_a != [resolve_action(invalid, POINTS24, policy, rng_c) for _ in range(3400)]
    counts = np.bincount([d.index for d in draws_a], minlength=len(POINTS24))
    assert all(d.invalid and d.reward_adjustment == 0.0 for d in draws_a)
    # 3400 uniform draws over 17 actions: 200 expected each; 120..280 is > 5 standard deviations.
    assert counts.min() > 120 and counts.max() < 280, counts


def test_valid_answer_consumes_no_randomness() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    resolved = resolve_action(parse_action('{"action": "hit"}', BLACKJACK), BLACKJACK, InvalidActionPolicy(), rng)
    assert resolved == ResolvedAction(1, False, 0.0)
    assert rng.bit_generator.state == state


def test_penalty_policy_with_a_text_fallback() -> None:
    policy = InvalidActionPolicy("penalty", fallback="look", penalty=1.0)
    resolved = resolve_action(parse_action('{"action": "fly"}', ALFWORLD), ALFWORLD, policy, np.random.default_rng(0))
    assert resolved == ResolvedAction(ALFWORLD.index("look"), True, -1.0)
    index, invalid, adjustment = resolved  # unpacks like a tuple
    assert (index, invalid, adjustment) == (6, True, -1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "greedy"}, ValueError, "mode"),
        ({"mode": "penalty", "penalty": -1.0}, ValueError, "penalty"),
        ({"mode": "penalty", "penalty": float("nan")}, ValueError, "penalty"),
        ({"mode": "penalty", "penalty": "1"}, TypeError, "penalty"),
        ({"fallback": -1}, ValueError, "fallback"),
        ({"fallback": True}, TypeError, "fallback"),
        ({"fallback": 1.5}, TypeError, "fallback"),
        ({"fallback": "  "}, ValueError, "fallback"),
    ],
)
def test_bad_policies_raise(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        InvalidActionPolicy(**kwargs)


def test_fallback_that_is_not_legal_raises_when_used() -> None:
    invalid = parse_action("", BLACKJACK)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="not a legal action"):
        resolve_action(invalid, BLACKJACK, InvalidActionPolicy("penalty", fallback="look"), rng)
    with pytest.raises(ValueError, match="out of range"):
        resolve_action(invalid, BLACKJACK, InvalidActionPolicy("penalty", fallback=2), rng)


def test_parsed_index_from_other_actions_raises() -> None:
    parsed = parse_action('{"action": "="}', EZPOINTS)
    with pytest.raises(ValueError, match="out of range"):
        resolve_action(parsed, BLACKJACK, InvalidActionPolicy(), np.random.default_rng(0))


def test_importing_parsing_and_prompts_does_not_import_torch() -> None:
    code = (
        "import sys, vlm_agent.prompting.parsing, vlm_agent.prompting.env_prompts, vlm_agent.prompting.invalid_actions\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
