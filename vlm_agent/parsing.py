"""Text to action: read the ``"action"`` field of a model's answer and match it to a legal action.

The prompt (:mod:`vlm_agent.prompts`) asks for a JSON answer whose last key is ``"action"``.
Models do not always comply, so :func:`parse_action` reads the answer with a small, tolerant,
linear-time scanner instead of ``json.loads``:

- JSON inside Markdown code fences or with prose around it, single-quoted strings, trailing
  commas, curly quotes and wrong case are all fine: only the ``"action"`` field is read, and
  text in other fields (a ``"thoughts"`` string that mentions other actions) never counts.
- The key may be quoted (``"action"``, ``'action'``, any case) or bare when it starts an object
  member or a line (``{action: "hit"}``, ``Action: hit``); ``my action: hit`` in prose is not a key.
  Markdown emphasis around a line's key or value is fine (``**Action:** hit``, ``**Action**: hit``,
  ``Action: **hit**``).
- A list value (``"action": ["-", "+"]``) is read as a whole: two different actions in it are
  ``"ambiguous"``, never "the first one".
- Invisible format characters (Unicode category Cf: zero-width space, soft hyphen, word joiner,
  byte order mark, ...) and NUL count for nothing: they are removed from keys and values before
  matching (``"1\\u200b0"`` reads as ``"10"``, not ``"1"``) and read as blank between a key and its
  colon. The scanner reads the text as given, so every position it reports points into it.
- A value cut off by the token limit (``"action": "1`` with no closing quote, or an unquoted
  value running into the end of the text) is not guessed: it counts only when it already is a
  legal action (rules 1-2 below) that no other legal action begins with. ``"1`` might have
  become ``"10"`` and ``"sta`` is not an action yet (both ``"truncated"``); ``"stand`` can only
  be ``"stand"``. An unquoted value closed by Markdown emphasis (``Action: **1**``) is complete.
- Several action fields (a model repeating itself) must agree; a cut-off field after a complete
  one is ignored.

Matching a value to the legal actions, in order (the first rule that applies decides):

1. ``exact``: the value with surrounding whitespace removed equals a legal action.
2. ``normalized``: equal after Unicode NFKC, case folding, collapsing runs of whitespace and
   reading the math signs ``×``, ``÷`` and ``−`` (U+2212) as ``*``, ``/`` and ``-`` (``"Hit"``,
   ``"GO TO  cabinet 1"``, ``"＋"``, ``"×"``), and after removing one wrapping pair of quotes,
   backticks, brackets or Markdown emphasis and a final full stop (``"'hit'"``, ``"{+}"``,
   ``"[10]"``, ``"**hit**"``, ``"hit."``). Parentheses are only removed when the inside is not
   empty, so ``"("`` and ``")"`` stay legal Points24 actions.
3. ``contained``: exactly one legal action occurs inside the normalized value as a whole word
   (an occurrence next to a letter or digit does not count when the action itself starts or ends
   with one: ``"1"`` does not occur in ``"10"``, ``"go to cabinet 1"`` not in ``"go to cabinet
   10"``); an occurrence inside the occurrence of a longer legal action is dropped
   (``"put"`` inside ``"put apple 1 in/on fridge 1"``). Two or more survivors: ``"ambiguous"``.

A text with no action field whose whole content (without fences, quotes, braces and emphasis) is
one legal action (``hit``, ``"+"``) is accepted with ``matched_by="bare"``.

Where the action is (:attr:`ParsedAction.span`, :attr:`ParsedAction.action_part_start`): a valid
result says where, in the text as given, the value it used is written, and where the answer's
*action part* begins: the first character of the action key (its opening quote when quoted; for a
bare key such as ``Action: hit``, the ``A``), or 0 for a bare answer, which is all action. The
thought/action split of the CoT-scaled log-probability (:mod:`vlm_agent.log_probs`) is taken from
it, so the tokens that chose the action are the ones the parser read.

Error reasons (``ParsedAction.error``), machine-readable, each meaning the answer is unusable:

- ``"empty"``: the text is empty, or only whitespace and invisible characters.
- ``"no_action"``: there is no action field and the text is not a bare legal action.
- ``"truncated"``: the text stops inside the action value, or stops inside a string or an open
  object before any action field appeared (cut off in the thoughts), or goes on past the examined
  part (see Cost below) without an action field in it.
- ``"illegal_action"``: the action value matches no legal action (includes an empty value and a
  value longer than :data:`MAX_VALUE_CHARS`).
- ``"ambiguous"``: the value matches several legal actions, or the text has several action
  fields with different values (an echoed format line ``"action": "-" or "+"`` plus the answer).

Invalid answers then become an action through :func:`resolve_action` and an
:class:`InvalidActionPolicy`: a uniformly random legal action (the paper's behaviour) or a fixed
fallback action with a reward penalty. Nothing here evaluates model text.

Cost: the work is linear in the examined text (the regular expressions have no nested quantifiers
over the same characters) and the examined text is bounded, so that one call stays in the
low milliseconds whatever the model wrote: only the first :data:`MAX_TEXT_CHARS` characters are
examined, and in them only the first :data:`MAX_SCANNED_TOKENS` quoted strings and punctuation
marks (a text reads as if it ended where a limit cut it). A real answer is far inside both: the
paper's 256-token answers are about 1,000 characters and 30-100 strings and marks; a hostile
text of 90,000 quotes or colons is not. Matching is bounded by :data:`MAX_VALUE_CHARS` and
:data:`MAX_ACTION_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "ERROR_REASONS",
    "MAX_ACTION_FIELDS",
    "MAX_SCANNED_TOKENS",
    "MAX_TEXT_CHARS",
    "MAX_VALUE_CHARS",
    "InvalidActionPolicy",
    "ParsedAction",
    "ResolvedAction",
    "parse_action",
    "resolve_action",
]

ERROR_REASONS: tuple[str, ...] = ("empty", "no_action", "truncated", "illegal_action", "ambiguous")
"""Every value :attr:`ParsedAction.error` can take besides ``None``."""

MAX_VALUE_CHARS = 1000
"""An action value longer than this is not matched (``"illegal_action"``): bounds the matching work."""

MAX_TEXT_CHARS = 16_000
"""Only this many leading characters of an answer are examined (a 256-token answer is ~1,000;
16,000 is a 4,000-token answer of English prose); a longer text reads as cut off there."""

MAX_SCANNED_TOKENS = 1_024
"""Only the first this many quotes and punctuation marks (``" ' { } [ ] : ,``, apostrophes included)
are read; the text reads as cut off after the last one. A real JSON answer has 30-100, prose about
one per 20-30 characters; the limit binds on degenerate text (thousands of quotes or colons)."""

MAX_ACTION_FIELDS = 32
"""Only the first this many action fields of a text are read (a hostile text may hold thousands)."""

_ACTION_KEY = "action"

# Curly quotes (which some chat models emit) read as straight ones.
_CURLY_QUOTES = ("\u201c", "\u201d", "\u2018", "\u2019")
_QUOTE_TRANSLATION = str.maketrans(dict(zip(_CURLY_QUOTES, ('"', '"', "'", "'"), strict=True)))
# Math signs that NFKC leaves alone, read as the ASCII operators the card games use.
_MATH_SIGNS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-"}
_NORMALIZE_TRANSLATION = str.maketrans(
    {**dict(zip(_CURLY_QUOTES, ('"', '"', "'", "'"), strict=True)), **_MATH_SIGNS}
)
# Characters that matter to the scanner; everything between them is "bare" text.
_SIGNIFICANT = re.compile(r"[\"'{}\[\]:,]")
# The rest of a quoted string after its opening quote ("unrolled loop": linear, no backtracking).
_DOUBLE_QUOTED_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SINGLE_QUOTED_REST = re.compile(r"[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL)
_WHITESPACE_RUN = re.compile(r"\s+")
_LEADING_WHITESPACE = re.compile(r"\s*")
# A value is short; a hostile text must not make one value read thousands of tokens.
_MAX_VALUE_TOKENS = 64
# A single quote opens a string only where JSON expects a value or a key, so that apostrophes
# in prose ("don't") do not swallow the rest of the text.
_SINGLE_QUOTE_OPENERS = frozenset("{[,:")
# Markdown emphasis and list markers allowed around a line-leading bare key ("**Action**:", "- action:").
_KEY_DECORATION = "*_#->` "
# Markdown emphasis that may close a bare key after its colon ("**Action:** hit").
_EMPHASIS = "*_"
# Pairs removed (once) around a value by the ``normalized`` rule; the longer emphasis first.
_WRAPPING_PAIRS = (
    ("'", "'"), ('"', '"'), ("`", "`"), ("{", "}"), ("[", "]"), ("(", ")"), ("<", ">"),
    ("**", "**"), ("__", "__"), ("*", "*"), ("_", "_"),
)  # fmt: skip
# Markdown emphasis that shows an unquoted value at the very end of a text is complete ("**1**").
_CLOSING_EMPHASIS = ("**", "__", "*", "_", "`")


@dataclass(frozen=True)
class ParsedAction:
    """What :func:`parse_action` read from one answer.

    Attributes:
        index: Index into the legal actions, or ``None`` when the answer is unusable.
        action_text: ``legal_actions[index]``, or ``None``.
        error: ``None`` on success, else one of :data:`ERROR_REASONS` (see the module docstring).
        value: The action value as written in the answer (decoded, unnormalized), when one was
            found; useful for logging what an invalid answer asked for.
        matched_by: How the value matched: ``"exact"``, ``"normalized"``, ``"contained"`` or
            ``"bare"``; ``None`` when nothing matched.
        span: ``(start, end)``: ``text[start:end]`` is the value the parser used, as written in
            the text given to :func:`parse_action` (inside its quotes when quoted, escapes and
            invisible characters as they are there). ``None`` exactly when ``index`` is ``None``.
        action_part_start: Where the answer's action part begins in that text: the first
            character of the action key (its opening quote when quoted), or 0 for a bare answer.
            The CoT-scaled log-probability splits the answer there (:mod:`vlm_agent.log_probs`).
            ``None`` exactly when ``index`` is ``None``.
    """

    index: int | None
    action_text: str | None
    error: str | None
    value: str | None = None
    matched_by: str | None = None
    span: tuple[int, int] | None = None
    action_part_start: int | None = None

    @property
    def valid(self) -> bool:
        """True when the answer named exactly one legal action."""
        return self.index is not None


class _Token(NamedTuple):
    kind: Literal["string", "punct"]
    start: int
    end: int
    text: str  # string contents (still escaped) or the punctuation character
    quote: str = ""  # the quote character of a string token
    terminated: bool = True


# ``_Token(...)`` runs a Python-level ``__new__``; the scanner makes one token per punctuation mark,
# and building the tuple directly is several times faster on degenerate, punctuation-only text.
_new_token = tuple.__new__


@dataclass(frozen=True)
class _Field:
    raw: str  # the value as written, escapes not yet decoded
    quote: str  # '"', "'" or "" for a bare value
    terminated: bool
    start: int  # text[start:end] == raw
    end: int
    key_start: int  # the first character of the key


def _format_characters() -> re.Pattern[str]:
    """A character class of NUL and every format character (Unicode category Cf) of this Python's Unicode.

    Only the blocks that hold Cf characters are looked at (a full scan of the code space costs
    ~0.1 s at import); ``tests/test_parsing.py`` checks that no Cf character lies outside them.
    """
    blocks = ((0x00AD, 0x00AD), (0x0600, 0x08FF), (0x180E, 0x180E), (0x2000, 0x206F), (0xFEFF, 0xFEFF),
              (0xFFF0, 0xFFFB), (0x11000, 0x113FF), (0x13430, 0x1345F), (0x1BCA0, 0x1BCA3),
              (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))  # fmt: skip
    codes = [0] + [
        code for first, last in blocks for code in range(first, last + 1) if unicodedata.category(chr(code)) == "Cf"
    ]
    runs: list[list[int]] = []  # ranges, not single characters: a class of ranges is searched much faster
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs) + "]")


_INVISIBLE = _format_characters()


def _remove_invisible(text: str) -> str:
    """``text`` without NUL and format characters (Unicode category Cf: zero-width space, soft hyphen, ...)."""
    if text.isascii() and "\0" not in text:  # the common case: one pass in C
        return text
    return _INVISIBLE.sub("", text)


def _scan(text: str) -> tuple[str, list[_Token]]:
    """Tokenize ``text``; when :data:`MAX_SCANNED_TOKENS` cut the scan short, also cut the text there."""
    tokens, read = _tokenize(text)
    return text[:read], tokens


def _tokenize(text: str) -> tuple[list[_Token], int]:
    """Split ``text`` into quoted strings and JSON punctuation, in one left-to-right pass.

    Stops after :data:`MAX_SCANNED_TOKENS` significant characters (apostrophes included) and
    returns how far it read.
    """
    tokens: list[_Token] = []
    pos = 0
    last_significant = ""  # the last punctuation character outside strings, "" at the start
    last_significant_end = 0
    length = len(text)
    for _ in range(MAX_SCANNED_TOKENS):
        if pos >= length:
            break
        match = _SIGNIFICANT.search(text, pos)
        if match is None:
            break
        char, start = match.group(), match.start()
        if char == "'":
            gap = text[last_significant_end:start]
            opens_string = (last_significant in _SINGLE_QUOTE_OPENERS or not last_significant) and (
                not gap or gap.isspace()
            )
            if not opens_string:  # an apostrophe; later gaps start after it (keeps the scan linear)
                last_significant, last_significant_end = char, start + 1
                pos = start + 1
                continue
        if char in "\"'":
            rest = (_DOUBLE_QUOTED_REST if char == '"' else _SINGLE_QUOTED_REST).match(text, start + 1)
            if rest is None:  # no closing quote: the text ends inside this string
                tokens.append(_new_token(_Token, ("string", start, length, text[start + 1 :], char, False)))
                break
            end = rest.end()
            tokens.append(_new_token(_Token, ("string", start, end, text[start + 1 : end - 1], char, True)))
            last_significant, last_significant_end = char, end
            pos = end
        else:
            tokens.append(_new_token(_Token, ("punct", start, start + 1, char, "", True)))
            last_significant, last_significant_end = char, start + 1
            pos = start + 1
    else:  # every step used: the text is read up to here
        return tokens, pos
    return tokens, length


def _is_blank(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` holds nothing but whitespace and invisible characters."""
    return start >= end or not _remove_invisible(text[start:end]).strip()


def _is_action_key(key: str) -> bool:
    return len(key) <= 64 and _remove_invisible(key).strip().casefold() == _ACTION_KEY


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]`` without surrounding whitespace, as positions."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return end, end
    left = len(piece) - len(piece.lstrip())
    return start + left, start + left + len(stripped)


def _bare_key(text: str, tokens: list[_Token], colon_index: int) -> tuple[int, str] | None:
    """For bare text ``action`` before the colon token that starts a member or a line: where the word
    begins and the Markdown emphasis right before it (``"**"`` in ``**Action:**``); else None."""
    colon = tokens[colon_index]
    previous = tokens[colon_index - 1] if colon_index > 0 else None
    gap_start = previous.end if previous is not None else 0
    if colon.start - gap_start > 64:  # a key is short; do not copy long prose
        gap_start = colon.start - 64
        starts_member = False
    else:
        starts_member = previous is None or (previous.kind == "punct" and previous.text in "{,")
    gap = text[gap_start : colon.start]
    if "\n" in gap:
        starts_member = True
        newline = gap.rindex("\n") + 1
        gap, gap_start = gap[newline:], gap_start + newline
    if not starts_member:
        return None
    # Markdown emphasis and list markers around a line-leading key ("**Action**:", "- action:").
    if not _is_action_key(_remove_invisible(gap).strip().strip(_KEY_DECORATION)):
        return None
    offset = next(i for i, char in enumerate(gap) if char.isalpha())  # decoration is no letter: the key's "a"
    before = _remove_invisible(gap[:offset])
    return gap_start + offset, before[len(before.rstrip(_EMPHASIS)) :]


def _find_action_fields(text: str, tokens: list[_Token]) -> list[_Field]:
    fields: list[_Field] = []
    for index, token in enumerate(tokens):
        if len(fields) >= MAX_ACTION_FIELDS:
            break
        if token.kind != "punct" or token.text != ":":
            continue
        key = tokens[index - 1] if index > 0 else None
        if key is not None and key.kind == "string" and _is_blank(text, key.end, token.start):
            if _is_action_key(key.text):
                fields.append(_read_value(text, tokens, index, key.start, ""))
            continue
        bare = _bare_key(text, tokens, index)
        if bare is not None:
            fields.append(_read_value(text, tokens, index, *bare))
    return fields


def _read_value(text: str, tokens: list[_Token], colon_index: int, key_start: int, emphasis: str) -> _Field:
    """Read the value after the colon token.

    The value runs from the colon to the first ``,``, ``}`` or ``]`` outside strings, the end of
    its line, or the end of the text. A value that is one quoted string is that string (complete
    when its closing quote is there, whatever follows); a value that opens a list runs to the
    list's closing ``]``; anything else (``hit``, ``"-" or "+"``) is kept as written, quotes
    included, and is complete when something ended it before the end of the text. ``emphasis``
    (the Markdown before a bare key) is skipped when it closes right after the colon.
    """
    colon = tokens[colon_index]
    after = colon.end + len(emphasis) if emphasis and text.startswith(emphasis, colon.end) else colon.end
    start = _LEADING_WHITESPACE.match(text, after).end()
    following = tokens[colon_index + 1 : colon_index + 1 + _MAX_VALUE_TOKENS]
    if following and following[0].start == start and following[0].kind == "punct" and following[0].text == "[":
        return _read_list(text, following, start, key_start)
    end_of_line = text.find("\n", start)
    if end_of_line == -1:
        end_of_line = len(text)
    region: list[_Token] = []
    stop, terminated = end_of_line, end_of_line < len(text)
    for token in following:
        if token.start >= end_of_line:
            break
        if token.kind == "punct" and token.text in ",}]":
            stop, terminated = token.start, True
            break
        region.append(token)
        if token.kind == "string" and not token.terminated:
            stop, terminated = len(text), False
            break
        if token.end > end_of_line:  # a string with raw newlines: the line goes on after it
            end_of_line = text.find("\n", token.end)
            if end_of_line == -1:
                end_of_line = len(text)
            stop, terminated = end_of_line, end_of_line < len(text)
    if len(region) == 1 and region[0].kind == "string" and region[0].start == start:
        only = region[0]
        if not only.terminated or _is_blank(text, only.end, stop):
            end = only.end - 1 if only.terminated else len(text)
            return _Field(only.text, only.quote, only.terminated, only.start + 1, end, key_start)
    value_start, value_end = _strip_span(text, start, stop)
    return _Field(text[value_start:value_end], "", terminated, value_start, value_end, key_start)


def _read_list(text: str, following: list[_Token], start: int, key_start: int) -> _Field:
    """A value that opens a list: as written up to its matching ``]`` (or the end: cut off)."""
    depth = 0
    for token in following:
        if token.kind == "string" and not token.terminated:
            break
        if token.kind == "punct" and token.text in "[]":
            depth += 1 if token.text == "[" else -1
            if depth == 0:
                return _Field(text[start : token.end], "", True, start, token.end, key_start)
    value_start, value_end = _strip_span(text, start, len(text))
    return _Field(text[value_start:value_end], "", False, value_start, value_end, key_start)


def _decode(field: _Field) -> str:
    """The value's text: JSON escapes decoded for double quotes, ``\\'`` for single quotes."""
    if len(field.raw) > 2 * MAX_VALUE_CHARS:  # too long to be an action even after unescaping
        return field.raw[: MAX_VALUE_CHARS + 1]
    raw = field.raw
    if field.quote == '"':
        try:
            decoded = json.loads(f'"{raw}"')
        except ValueError:  # raw newlines or bad escapes: keep the text, unescape the quote
            decoded = raw.replace('\\"', '"').replace("\\\\", "\\")
        return decoded if isinstance(decoded, str) else raw
    if field.quote == "'":
        return raw.replace("\\'", "'").replace("\\\\", "\\")
    return raw


def _normalize(text: str) -> str:
    """Invisible characters removed, NFKC, curly quotes to straight ones, math signs to ASCII operators,
    case folding, whitespace runs to one space, stripped."""
    text = unicodedata.normalize("NFKC", _remove_invisible(text)).translate(_NORMALIZE_TRANSLATION).casefold()
    return _WHITESPACE_RUN.sub(" ", text).strip()


def _unwrap_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Positions of ``text[start:end]`` without one wrapping pair and a final full stop (see :func:`_unwrap`)."""
    start, end = _strip_span(text, start, end)
    if end - start > 1 and text[end - 1] == "." and text[end - 2] != ".":
        start, end = _strip_span(text, start, end - 1)
    for opening, closing in _WRAPPING_PAIRS:
        if (
            end - start > len(opening) + len(closing)
            and text.startswith(opening, start, end)
            and text.endswith(closing, start, end)
        ):
            return _strip_span(text, start + len(opening), end - len(closing))
    return start, end


def _unwrap(text: str) -> str:
    """Remove one wrapping pair of quotes/brackets/emphasis and a final full stop (``'hit'.`` -> ``hit``)."""
    start, end = _unwrap_span(text, 0, len(text))
    return text[start:end]


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _occurrences(value: str, action: str) -> list[tuple[int, int]]:
    """Spans where ``action`` occurs in ``value`` as a whole word (see rule 3 of the module docstring)."""
    spans: list[tuple[int, int]] = []
    start = value.find(action)
    while start != -1:
        end = start + len(action)
        before_ok = start == 0 or not (_is_word_char(action[0]) and _is_word_char(value[start - 1]))
        after_ok = end == len(value) or not (_is_word_char(action[-1]) and _is_word_char(value[end]))
        if before_ok and after_ok:
            spans.append((start, end))
        start = value.find(action, start + 1)
    return spans


def _match_value(value: str, legal_actions: Sequence[str], normalized_legal: list[str]) -> ParsedAction:
    """Match one decoded action value against the legal actions (rules 1-3 of the module docstring)."""
    if len(value) > MAX_VALUE_CHARS:
        return ParsedAction(None, None, "illegal_action", value[:MAX_VALUE_CHARS])
    stripped = value.strip()
    for index, action in enumerate(legal_actions):
        if stripped == action:
            return ParsedAction(index, action, None, value, "exact")
    normalized = _normalize(value)
    for candidate in dict.fromkeys((normalized, _normalize(_unwrap(normalized)))):
        matches = [index for index, action in enumerate(normalized_legal) if action == candidate]
        if len(matches) == 1:
            return ParsedAction(matches[0], legal_actions[matches[0]], None, value, "normalized")
        if len(matches) > 1:
            return ParsedAction(None, None, "ambiguous", value)
    survivors = _contained_actions(normalized, normalized_legal)
    if len(survivors) == 1:
        return ParsedAction(survivors[0], legal_actions[survivors[0]], None, value, "contained")
    return ParsedAction(None, None, "ambiguous" if survivors else "illegal_action", value)


def _contained_actions(value: str, normalized_legal: list[str]) -> list[int]:
    """Indices of the legal actions occurring in ``value`` as whole words, outside longer ones.

    Longer actions claim their characters first; a shorter action survives when at least one of
    its occurrences is not entirely inside characters claimed by a longer one. Stops at two
    survivors (the caller only needs to know "one" or "several").
    """
    if not value:
        return []
    found = {
        index: _occurrences(value, action)
        for index, action in enumerate(normalized_legal)
        if action and action in value
    }
    claimed = bytearray(len(value))
    survivors: list[int] = []
    seen_texts: set[str] = set()
    for index in sorted((i for i, spans in found.items() if spans), key=lambda i: -len(normalized_legal[i])):
        spans = found[index]
        text = normalized_legal[index]
        if any(claimed.find(0, start, end) != -1 for start, end in spans) and text not in seen_texts:
            # Legal actions that are equal after normalization count once (the first index).
            seen_texts.add(text)
            survivors.append(index)
            if len(survivors) > 1:
                break
        for start, end in spans:
            claimed[start:end] = b"\x01" * (end - start)
    return survivors


def _bare_answer_span(text: str) -> tuple[int, int]:
    """Positions of the text without code fences, a language tag, quotes, braces and emphasis around it."""
    start, end = _strip_span(text, 0, len(text))
    if text.startswith("```", start, end):
        start += 3
        newline = text.find("\n", start, end)
        if newline != -1 and text[start:newline].strip().isalpha():  # ```json
            start = newline + 1
        end = start + len(text[start:end].rstrip())
        if text.endswith("```", start, end):
            end -= 3
    start, end = _strip_span(text, start, end)
    for _ in range(3):
        unwrapped = _unwrap_span(text, start, end)
        if unwrapped == (start, end):
            break
        start, end = unwrapped
    return start, end


def _validate_legal_actions(legal_actions: Sequence[str]) -> None:
    if isinstance(legal_actions, str):
        raise TypeError(
            f"legal_actions must be a sequence of action strings, got the single string {legal_actions!r}; "
            "pass env.unwrapped.legal_actions()"
        )
    if len(legal_actions) == 0:
        raise ValueError(
            "legal_actions is empty: there is no action to choose from; pass env.unwrapped.legal_actions()"
        )
    for action in legal_actions:
        if not isinstance(action, str):
            raise TypeError(f"legal_actions must hold strings, got {type(action).__name__} {action!r}")


def parse_action(text: str, legal_actions: Sequence[str]) -> ParsedAction:
    """Read the action a model's answer chose among ``legal_actions``.

    A pure function of its arguments.

    Args:
        text: The generated answer (the decoded completion, special tokens removed). Only the
            first :data:`MAX_TEXT_CHARS` characters (and in them :data:`MAX_SCANNED_TOKENS`
            strings and marks) are examined; a longer text reads as one cut off there.
        legal_actions: The text form of the legal actions, in the env's index order
            (``env.unwrapped.legal_actions()``).

    Returns:
        A :class:`ParsedAction`; ``index``, ``span`` and ``action_part_start`` are ``None``
        exactly when ``error`` is set. Never raises for any ``str`` text.

    Raises:
        TypeError: ``text`` is not a ``str`` or ``legal_actions`` does not hold strings.
        ValueError: ``legal_actions`` is empty.

    Example:
        >>> parse_action('```json\\n{"thoughts": "not 1", "action": "10",}\\n```', ["1", "10"]).index
        1
        >>> parse_action('{"action": "1', ["1", "10"]).error
        'truncated'
        >>> answer = "I would draw.\\nAction: hit"
        >>> parsed = parse_action(answer, ["stand", "hit"])
        >>> answer[parsed.action_part_start :], answer[slice(*parsed.span)]
        ('Action: hit', 'hit')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be the decoded answer as a str, got {type(text).__name__}")
    _validate_legal_actions(legal_actions)
    given_length = len(text)
    text = text[:MAX_TEXT_CHARS]
    if not _remove_invisible(text).strip():
        return ParsedAction(None, None, "empty" if given_length == len(text) else "truncated")
    normalized_legal = [_normalize(action) for action in legal_actions]
    text, tokens = _scan(text)
    fields = _find_action_fields(text, tokens)
    if not fields and any(quote in text for quote in _CURLY_QUOTES):
        # Only now read curly quotes as straight ones: in valid JSON they may sit inside strings.
        # (One character for one, so positions still point into the text as given.)
        text, tokens = _scan(text.translate(_QUOTE_TRANSLATION))
        fields = _find_action_fields(text, tokens)
    if not fields:
        return _parse_bare_answer(text, tokens, legal_actions, normalized_legal, len(text) < given_length)
    results = [_resolve_field(field, legal_actions, normalized_legal) for field in fields]
    complete = [(field, result) for field, result in zip(fields, results, strict=True) if result.error != "truncated"]
    if not complete:
        return results[0]
    if len({result.index for _, result in complete}) > 1:
        # Fields that disagree (or one legal, one not): the answer names several actions.
        values = {_normalize(result.value or "") for _, result in complete}
        if len(values) > 1:
            return ParsedAction(None, None, "ambiguous", complete[0][1].value)
    field, result = complete[0]
    if not result.valid:
        return result
    return dataclasses.replace(result, span=(field.start, field.end), action_part_start=field.key_start)


def _resolve_field(field: _Field, legal_actions: Sequence[str], normalized_legal: list[str]) -> ParsedAction:
    """Match one field; a cut-off value counts only if no legal action could continue it."""
    value = _decode(field)
    if field.terminated or _closed_by_emphasis(field):
        return _match_value(value, legal_actions, normalized_legal)
    match = _match_value(value, legal_actions, normalized_legal)
    if match.valid and match.matched_by in ("exact", "normalized"):
        chosen = normalized_legal[match.index]
        if not any(other != chosen and other.startswith(chosen) for other in normalized_legal):
            return match
    return ParsedAction(None, None, "truncated", value)


def _closed_by_emphasis(field: _Field) -> bool:
    """An unquoted value wrapped in Markdown emphasis (``**1**``) ends where the emphasis closes."""
    raw = field.raw
    return field.quote == "" and any(
        len(raw) > 2 * len(marker) and raw.startswith(marker) and raw.endswith(marker) for marker in _CLOSING_EMPHASIS
    )


def _parse_bare_answer(
    text: str, tokens: list[_Token], legal_actions: Sequence[str], normalized_legal: list[str], cut: bool
) -> ParsedAction:
    """A text without an action field: accept it only if it is, as a whole, one legal action.

    ``cut``: the examined text is a prefix of the answer (the bounds of the module docstring), so
    an unusable one is ``"truncated"``: the rest was never read.
    """
    start, end = _bare_answer_span(text)
    if end - start <= MAX_VALUE_CHARS:
        bare = text[start:end]
        match = _match_value(bare, legal_actions, normalized_legal)
        if match.valid and match.matched_by in ("exact", "normalized"):
            return ParsedAction(match.index, match.action_text, None, bare, "bare", (start, end), 0)
    cut_off = cut or (bool(tokens) and not tokens[-1].terminated) or _opens_more_than_closes(tokens)
    return ParsedAction(None, None, "truncated" if cut_off else "no_action")


def _opens_more_than_closes(tokens: list[_Token]) -> bool:
    depth = 0
    for token in tokens:
        if token.kind == "punct" and token.text in "{}":
            depth += 1 if token.text == "{" else -1
    return depth > 0


@dataclass(frozen=True)
class InvalidActionPolicy:
    """What to do when an answer is unusable (``ParsedAction.index is None``).

    Attributes:
        mode: ``"random"``: a uniformly random legal action and no reward change, as the paper's
            card-game code did (it hides bad answers behind lucky moves). ``"penalty"``: the
            ``fallback`` action, and ``-penalty`` added to the step's reward (the paper's ALFWorld
            code subtracted 1 for an inadmissible command: ``mode="penalty", penalty=1.0``).
        fallback: The action taken in ``"penalty"`` mode: an index into the legal actions, or an
            action text that must be legal at that step (e.g. ``"look"`` for ALFWorld).
        penalty: Non-negative amount subtracted from the reward in ``"penalty"`` mode; unused in
            ``"random"`` mode.
    """

    mode: Literal["random", "penalty"] = "random"
    fallback: int | str = 0
    penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("random", "penalty"):
            raise ValueError(f"InvalidActionPolicy.mode must be 'random' or 'penalty', got {self.mode!r}")
        if isinstance(self.fallback, bool) or not isinstance(self.fallback, (int, str)):
            raise TypeError(
                f"InvalidActionPolicy.fallback must be an action index (int) or an action text (str), "
                f"got {type(self.fallback).__name__} {self.fallback!r}"
            )
        if isinstance(self.fallback, int) and self.fallback < 0:
            raise ValueError(f"InvalidActionPolicy.fallback index must be >= 0, got {self.fallback}")
        if isinstance(self.fallback, str) and not self.fallback.strip():
            raise ValueError("InvalidActionPolicy.fallback must not be an empty action text")
        if isinstance(self.penalty, bool) or not isinstance(self.penalty, (int, float)):
            raise TypeError(f"InvalidActionPolicy.penalty must be a number, got {self.penalty!r}")
        if not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(
                f"InvalidActionPolicy.penalty must be a finite number >= 0 (it is subtracted from the reward), "
                f"got {self.penalty}"
            )

    def fallback_index(self, legal_actions: Sequence[str]) -> int:
        """The index of ``fallback`` among ``legal_actions``; ValueError when it is not legal."""
        if isinstance(self.fallback, int):
            if self.fallback >= len(legal_actions):
                raise ValueError(
                    f"InvalidActionPolicy.fallback index {self.fallback} is out of range for "
                    f"{len(legal_actions)} legal actions; use an index below {len(legal_actions)}"
                )
            return self.fallback
        try:
            return list(legal_actions).index(self.fallback)
        except ValueError:
            shown = ", ".join(repr(action) for action in list(legal_actions)[:20])
            raise ValueError(
                f"InvalidActionPolicy.fallback {self.fallback!r} is not a legal action now; legal: [{shown}"
                f"{', ...' if len(legal_actions) > 20 else ''}]. Use an action that is always legal or an index"
            ) from None


class ResolvedAction(NamedTuple):
    """The action actually executed for one answer; unpacks as ``index, invalid, reward_adjustment``.

    Attributes:
        index: Index into the legal actions, always in ``range(len(legal_actions))``.
        invalid: True when the answer was unusable and the policy chose the action; callers
            compute the invalid-answer rate from it.
        reward_adjustment: Added to the env's reward for this step (``-penalty`` or ``0.0``).
    """

    index: int
    invalid: bool
    reward_adjustment: float


def resolve_action(
    parsed: ParsedAction,
    legal_actions: Sequence[str],
    policy: InvalidActionPolicy,
    rng: np.random.Generator,
) -> ResolvedAction:
    """Turn a parsed answer into an executable action, applying ``policy`` to unusable answers.

    Args:
        parsed: The result of :func:`parse_action` for the same ``legal_actions``.
        legal_actions: The legal actions at this step.
        policy: What to do with an unusable answer.
        rng: The generator for ``"random"`` mode (seed it for reproducible rollouts); one
            ``rng.integers`` draw per invalid answer, none for a valid one.

    Raises:
        ValueError: ``parsed.index`` is out of range for ``legal_actions`` (parsed against other
            actions), or the policy's fallback is not legal here.
    """
    _validate_legal_actions(legal_actions)
    if parsed.index is not None:
        if not 0 <= parsed.index < len(legal_actions):
            raise ValueError(
                f"parsed.index {parsed.index} is out of range for {len(legal_actions)} legal actions: "
                "parse the answer against the same legal actions you resolve it with"
            )
        return ResolvedAction(parsed.index, False, 0.0)
    if policy.mode == "random":
        return ResolvedAction(int(rng.integers(len(legal_actions))), True, 0.0)
    return ResolvedAction(policy.fallback_index(legal_actions), True, -float(policy.penalty))
