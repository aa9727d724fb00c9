"""The lexer under :mod:`vlm_agent.prompting.parsing`: an answer's text as quotes, brackets, colons
and commas, with the normalisation (curly quotes, math signs, invisible format characters) that
the parser applies before it looks for the action.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, NamedTuple

MAX_SCANNED_TOKENS = 1_024
"""Only the first this many quotes and punctuation marks (``" ' { } [ ] : ,``, apostrophes included)
are read; the text reads as cut off after the last one. A real JSON answer has 30-100, prose about
one per 20-30 characters; the limit binds on degenerate text (thousands of quotes or colons)."""

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
# A single quote opens a string only where JSON expects a value or a key, so that apostrophes
# in prose ("don't") do not swallow the rest of the text.
_SINGLE_QUOTE_OPENERS = frozenset("{[,:")


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


def _normalize(text: str) -> str:
    """Invisible characters removed, NFKC, curly quotes to straight ones, math signs to ASCII operators,
    case folding, whitespace runs to one space, stripped."""
    text = unicodedata.normalize("NFKC", _remove_invisible(text)).translate(_NORMALIZE_TRANSLATION).casefold()
    return _WHITESPACE_RUN.sub(" ", text).strip()


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]`` without surrounding whitespace, as positions."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return end, end
    left = len(piece) - len(piece.lstrip())
    return start + left, start + left + len(stripped)


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

MAX_VALUE_CHARS = 1000
"""An action value longer than this is not matched (``"illegal_action"``): bounds the matching work."""
# Pairs removed (once) around a value by the ``normalized`` rule; the longer emphasis first.
_WRAPPING_PAIRS = (
    ("'", "'"), ('"', '"'), ("`", "`"), ("{", "}"), ("[", "]"), ("(", ")"), ("<", ">"),
    ("**", "**"), ("__", "__"), ("*", "*"), ("_", "_"),
)  # fmt: skip


@dataclass(frozen=True)
class _Field:
    raw: str  # the value as written, escapes not yet decoded
    quote: str  # '"', "'" or "" for a bare value
    terminated: bool
    start: int  # text[start:end] == raw
    end: int
    key_start: int  # the first character of the key
