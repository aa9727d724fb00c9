"""Text to action: read the ``"action"`` field of a model's answer and match it to a legal action.

The prompt (:mod:`vlm_agent.prompting`) asks for a JSON answer whose last key is ``"action"``.
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
  matching (``"1\u200b0"`` reads as ``"10"``, not ``"1"``) and read as blank between a key and its
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
thought/action split of the CoT-scaled log-probability (:mod:`vlm_agent.algorithms.cot_log_prob`) is taken from
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
from collections.abc import Sequence
from dataclasses import dataclass

from vlm_agent.prompting.answer_lexer import (
    _CURLY_QUOTES,
    _LEADING_WHITESPACE,
    _QUOTE_TRANSLATION,
    MAX_VALUE_CHARS,
    _decode,
    _Field,
    _is_blank,
    _normalize,
    _occurrences,
    _remove_invisible,
    _scan,
    _strip_span,
    _Token,
    _unwrap,
    _unwrap_span,
)

ERROR_REASONS: tuple[str, ...] = ("empty", "no_action", "truncated", "illegal_action", "ambiguous")
"""Every value :attr:`ParsedAction.error` can take besides ``None``."""

MAX_TEXT_CHARS = 16_000
"""Only this many leading characters of an answer are examined (a 256-token answer is ~1,000;
16,000 is a 4,000-token answer of English prose); a longer text reads as cut off there."""

MAX_ACTION_FIELDS = 32
"""Only the first this many action fields of a text are read (a hostile text may hold thousands)."""

_ACTION_KEY = "action"
# A value is short; a hostile text must not make one value read thousands of tokens.
_MAX_VALUE_TOKENS = 64
# Markdown emphasis and list markers allowed around a line-leading bare key ("**Action**:", "- action:").
_KEY_DECORATION = "*_#->` "
# Markdown emphasis that may close a bare key after its colon ("**Action:** hit").
_EMPHASIS = "*_"
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
            The CoT-scaled log-probability splits the answer there (:mod:`vlm_agent.algorithms.cot_log_prob`).
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


def _is_action_key(key: str) -> bool:
    return len(key) <= 64 and _remove_invisible(key).strip().casefold() == _ACTION_KEY


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
