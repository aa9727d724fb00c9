"""Prompt templates: the RL4VLM task prompt (instruction, legal actions, the JSON answer format with
its read-out fields, thoughts and action), loaded from YAML or built in, and the chat message
layout every model is prompted with. The built-in prompt of each environment is in
:mod:`vlm_agent.prompting.env_prompts`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

ACTION_KEY = "action"
"""The JSON key of the chosen action: always the last key of an answer."""

THOUGHTS_KEY = "thoughts"
"""The JSON key of the chain of thought (CoT templates only), just before :data:`ACTION_KEY`."""

PLACEHOLDERS: frozenset[str] = frozenset({"state", "legal_actions"})
"""The only placeholders a template's instruction may use."""

ReadoutValue = str | int | float | Sequence[str | int | float]
"""A read-out value: a text, a number, or a list of them (rendered as JSON)."""

_RESPONSE_FORMAT_INTRO = "Your response should be a valid json file in the following format:"

INADMISSIBLE_ACTION_TEXT = "(an unusable answer: nothing happened)"
"""What a history entry says the agent did when its answer executed no action (see
:func:`history_action`)."""


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier step of the running episode, as the prompt's memory shows it.

    Attributes:
        observation: The env's text description of the state the agent acted in (``describe()``).
        action: The action executed there (:func:`history_action`).
    """

    observation: str
    action: str


def history_action(legal_actions: Sequence[str], index: int) -> str:
    """The text a history entry gives for executed action ``index``: the legal action's text, or
    :data:`INADMISSIBLE_ACTION_TEXT` for an index past the list (the "nothing happens" rule)."""
    return str(legal_actions[index]) if 0 <= index < len(legal_actions) else INADMISSIBLE_ACTION_TEXT


def render_history(history: Sequence[HistoryEntry], state_text: str, *, with_observations: bool) -> str:
    """The memory block that opens a prompt: the last steps of the episode, oldest first.

    The one place the history is written into a prompt. ``with_observations`` False (image-only
    prompts, which must not receive the state as text) lists the actions alone. Paragraphs that
    an observation ends with and the current state text ends with too (ALFWorld's task sentence)
    are left out of the entry: they are in the prompt once already.
    """
    if not history:
        return ""
    if not with_observations:
        actions = ", ".join(f"'{entry.action}'" for entry in history)
        return f"Your last {len(history)} action{'s' if len(history) > 1 else ''}, oldest first: {actions}.\n"
    current = [part.strip() for part in state_text.split("\n\n")]
    lines = [f"Your last {len(history)} step{'s' if len(history) > 1 else ''}, oldest first:"]
    for number, entry in enumerate(history, start=1):
        parts = [part.strip() for part in entry.observation.split("\n\n")]
        while len(parts) > 1 and current and parts[-1] == current[-1]:
            parts.pop()
        observation = " ".join(" ".join(parts).split())
        lines.append(f"{number}. Observation: {observation} Action: {entry.action}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReadoutField:
    """One state read-out the CoT answer gives before its thoughts (``"current number": "3"``).

    Attributes:
        key: The JSON key, as the prompt shows it.
        hint: What the prompt shows as its value, verbatim (``'"x"'``, ``"[x, y]"``).
        info_key: The env ``info`` key holding the true value, for demonstration answers
            (:func:`answer_from_info`); ``None`` when the env has none.
        style: How the info value becomes the answer's value: ``"text"``: ``str(value)`` as a
            JSON string; ``"list"``: the sequence as a JSON list, items as they are;
            ``"joined"``: a sequence joined with spaces as one JSON string (a formula).
    """

    key: str
    hint: str = '"x"'
    info_key: str | None = None
    style: Literal["text", "list", "joined"] = "text"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError(f"readout key must be a non-empty string, got {self.key!r}")
        if self.key.strip().casefold() in (ACTION_KEY, THOUGHTS_KEY):
            raise ValueError(f"readout key {self.key!r} is reserved; the answer adds 'thoughts' and 'action' itself")
        if not isinstance(self.hint, str) or not self.hint.strip():
            raise ValueError(f"readout field {self.key!r}: hint must be a non-empty string such as '\"x\"'")
        if self.info_key is not None and (not isinstance(self.info_key, str) or not self.info_key):
            raise ValueError(f"readout field {self.key!r}: info_key must be a non-empty string or null")
        if self.style not in ("text", "list", "joined"):
            raise ValueError(
                f"readout field {self.key!r}: style must be 'text', 'list' or 'joined', got {self.style!r}"
            )

    def value_from_info(self, info: Mapping[str, Any]) -> ReadoutValue:
        """The true read-out value from an env ``info`` dict, shaped by :attr:`style`."""
        if self.info_key is None:
            raise ValueError(
                f"readout field {self.key!r} has no info_key, so its true value is unknown; "
                "set info_key in the template or pass readout= explicitly"
            )
        if self.info_key not in info:
            raise ValueError(
                f"info has no {self.info_key!r} (needed by readout field {self.key!r}); its keys are "
                f"{sorted(info)}. Pass the info dict of the env's last reset() or step()"
            )
        value = info[self.info_key]
        if self.style == "text":
            return str(value)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"info[{self.info_key!r}] must be a list for readout style {self.style!r}, got {value!r}")
        if self.style == "joined":
            return " ".join(str(item) for item in value)
        return [item if isinstance(item, (int, float, str)) else str(item) for item in value]


@dataclass(frozen=True)
class PromptTemplate:
    """A task prompt for one environment, with or without chain of thought.

    Attributes:
        env_id: The environment id the template is for (``"gym_cards/NumberLine-v0"``).
        cot: True: the answer has the read-outs, ``"thoughts"``, then ``"action"``; False:
            ``{"action": ...}`` only.
        instruction: The task description before the answer format; may use the placeholders
            ``{state}`` and ``{legal_actions}`` (str.format syntax; ``{{``/``}}`` for braces).
        thoughts_hint: What the ``"thoughts"`` value should contain (CoT only).
        readout: The state read-outs asked before the thoughts (CoT only), in answer order.
        action_hint: What the prompt shows as the ``"action"`` value, verbatim; ``None``: the
            legal actions joined with "or" (``"-" or "+"``) when there are at most
            four, else ``"{one of the legal actions}"``.
        legal_actions_separator: Between the quoted actions of ``{legal_actions}``.
        history_steps: How many earlier steps of the episode the prompt recalls (K, 0: none):
            :func:`render_history`'s block, filled by the loop (:mod:`vlm_agent.rollout.loop`).
    """

    env_id: str
    cot: bool
    instruction: str
    thoughts_hint: str = ""
    readout: tuple[ReadoutField, ...] = ()
    action_hint: str | None = None
    legal_actions_separator: str = ", "
    history_steps: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise ValueError(f"env_id must be a non-empty string, got {self.env_id!r}")
        if not isinstance(self.cot, bool):
            raise ValueError(f"cot must be true or false, got {self.cot!r}")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise ValueError(f"template for {self.env_id}: instruction must be a non-empty string")
        _check_placeholders(self.instruction, f"template for {self.env_id}: instruction")
        if not isinstance(self.readout, tuple) or not all(isinstance(f, ReadoutField) for f in self.readout):
            raise ValueError(f"template for {self.env_id}: readout must be a tuple of ReadoutField")
        if self.cot and not (isinstance(self.thoughts_hint, str) and self.thoughts_hint.strip()):
            raise ValueError(
                f"template for {self.env_id}: a CoT template needs a thoughts_hint saying what to think about"
            )
        if not self.cot and self.readout:
            raise ValueError(
                f"template for {self.env_id}: readout fields belong to CoT answers; set cot: true or remove readout"
            )
        keys = [f.key for f in self.readout]
        if len(set(keys)) != len(keys):
            raise ValueError(f"template for {self.env_id}: readout keys must be unique, got {keys}")
        if self.action_hint is not None and (not isinstance(self.action_hint, str) or not self.action_hint.strip()):
            raise ValueError(f"template for {self.env_id}: action_hint must be a non-empty string or null")
        if not isinstance(self.legal_actions_separator, str):
            raise ValueError(f"template for {self.env_id}: legal_actions_separator must be a string")
        if isinstance(self.history_steps, bool) or not isinstance(self.history_steps, int) or self.history_steps < 0:
            raise ValueError(f"template for {self.env_id}: history_steps must be an integer >= 0, "
                             f"got {self.history_steps!r}")

    @property
    def shows_state(self) -> bool:
        """True when the instruction writes the state's text (``{state}``) into the prompt."""
        return any(name == "state" for _, name, _, _ in string.Formatter().parse(self.instruction))

    @property
    def answer_keys(self) -> tuple[str, ...]:
        """The JSON keys of an answer, in the order the prompt asks for them."""
        if not self.cot:
            return (ACTION_KEY,)
        return (*(f.key for f in self.readout), THOUGHTS_KEY, ACTION_KEY)

    def render(self, state_text: str, legal_actions: Sequence[str], history: Sequence[HistoryEntry] = ()) -> str:
        """The user message text for one step.

        Args:
            state_text: The env's text description of the state (``env.unwrapped.describe()``);
                shown only where the instruction has ``{state}``.
            legal_actions: The text actions legal now (``env.unwrapped.legal_actions()``).
            history: The episode's earlier steps, oldest first; the last :attr:`history_steps` of
                them open the prompt (:func:`render_history`; observations only where the
                instruction shows the state).
        """
        if not isinstance(state_text, str):
            raise TypeError(f"state_text must be a str (env.unwrapped.describe()), got {type(state_text).__name__}")
        actions = _checked_actions(legal_actions)
        quoted = self.legal_actions_separator.join(f"'{action}'" for action in actions)
        instruction = self.instruction.format(state=state_text, legal_actions=f"[{quoted}]")
        recalled = list(history)[-self.history_steps:] if self.history_steps else []
        memory = render_history(recalled, state_text, with_observations=self.shows_state)
        return f"{memory}{instruction.rstrip()} {_RESPONSE_FORMAT_INTRO}\n{self._format_block(actions)}"

    def _format_block(self, legal_actions: Sequence[str]) -> str:
        if self.action_hint is not None:
            action_hint = self.action_hint
        elif len(legal_actions) <= 4:
            action_hint = " or ".join(json.dumps(action, ensure_ascii=False) for action in legal_actions)
        else:
            action_hint = '"{one of the legal actions}"'
        lines = [f'"{f.key}": {f.hint},' for f in self.readout] if self.cot else []
        if self.cot:
            lines.append(f'"{THOUGHTS_KEY}": "{{{self.thoughts_hint}}}",')
        lines.append(f'"{ACTION_KEY}": {action_hint}')
        return "{\n" + "\n".join(lines) + "\n}"

    def format_answer(
        self,
        action: str,
        *,
        thoughts: str | None = None,
        readout: Mapping[str, ReadoutValue] | None = None,
    ) -> str:
        """The JSON answer a perfect model gives, keys in the order the prompt asks (SFT targets).

        Args:
            action: The chosen action's text (one of the legal actions).
            thoughts: The reasoning; required for CoT templates, not allowed otherwise.
            readout: A value for every readout key (CoT only); texts, numbers or lists of them.

        Raises:
            ValueError: A missing or unexpected thoughts/readout value.
        """
        if not isinstance(action, str) or not action:
            raise ValueError(f"action must be a non-empty action text, got {action!r}")
        if not self.cot:
            if thoughts is not None or readout:
                raise ValueError(
                    f"the {self.env_id} template is action-only (cot=False): pass neither thoughts nor readout"
                )
            return json.dumps({ACTION_KEY: action}, ensure_ascii=False)
        if not isinstance(thoughts, str):
            raise ValueError(f"the {self.env_id} CoT template needs thoughts= (a string) for its answer")
        readout = dict(readout or {})
        expected = [f.key for f in self.readout]
        missing = [key for key in expected if key not in readout]
        unexpected = [key for key in readout if key not in expected]
        if missing or unexpected:
            raise ValueError(
                f"the {self.env_id} template reads out {expected}; readout= is missing {missing}"
                f" and has unexpected {unexpected}"
            )
        answer: dict[str, Any] = {key: _json_value(key, readout[key]) for key in expected}
        answer[THOUGHTS_KEY] = thoughts
        answer[ACTION_KEY] = action
        return json.dumps(answer, ensure_ascii=False)


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, list, tuple)):
        raise ValueError(f"readout {key!r} must be a text, a number or a list of them, got {value!r}")
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
            raise ValueError(f"readout {key!r} must be a list of texts or numbers, got {value!r}")
        return list(value)
    return value


def _checked_actions(legal_actions: Sequence[str]) -> list[str]:
    if isinstance(legal_actions, str) or not all(isinstance(a, str) for a in legal_actions):
        raise TypeError("legal_actions must be a sequence of action strings (env.unwrapped.legal_actions())")
    actions = list(legal_actions)
    if not actions:
        raise ValueError("legal_actions is empty: there is no action to offer the model")
    return actions


def _check_placeholders(text: str, what: str) -> None:
    """Raise one clear ValueError unless ``text`` uses only ``{state}`` and ``{legal_actions}``."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as error:
        raise ValueError(
            f"{what} is not a valid format string ({error}); write {{{{ and }}}} for literal braces"
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"{what} uses the placeholder {shown}; only {{state}} and {{legal_actions}} exist "
                "(without conversions or format specs). Write {{ and }} for literal braces"
            )


_TEMPLATE_KEYS = {f.name for f in fields(PromptTemplate)}
_REQUIRED_KEYS = {"env_id", "instruction"}
_READOUT_KEYS = {f.name for f in fields(ReadoutField)}


def load_prompt_template(path: str | Path) -> PromptTemplate:
    """Load a user's template from a ``.yaml``/``.yml`` or ``.json`` file (see the module docstring).

    Keys: ``env_id`` and ``instruction`` (required), ``cot`` (default true), ``thoughts_hint``
    (required when cot), ``readout`` (a list of ``{key, hint, info_key, style}``), ``action_hint``,
    ``legal_actions_separator``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable file, unknown or missing keys, unknown placeholders; the message
            names the problem and the fix.
        ImportError: A YAML file without PyYAML installed (``pip install 'gym-cards-vlm[agent]'``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:  # pragma: no cover - pyyaml ships with the agent extra
            raise ImportError(
                "reading a YAML prompt template needs PyYAML: pip install 'gym-cards-vlm[agent]' (or use a .json file)"
            ) from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    else:
        raise ValueError(
            f"{path}: a prompt template must be a .yaml, .yml or .json file, got {suffix or 'no suffix'!r}"
        )
    return template_from_mapping(data, source=str(path))


def template_from_mapping(data: Any, *, source: str = "template") -> PromptTemplate:
    """Build a :class:`PromptTemplate` from a plain mapping (the parsed YAML/JSON file)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a prompt template must be a mapping of keys to values, got {type(data).__name__}")
    unknown = sorted(set(data) - _TEMPLATE_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; allowed keys: {sorted(_TEMPLATE_KEYS)}")
    missing = sorted(_REQUIRED_KEYS - set(data))
    if missing:
        raise ValueError(f"{source}: missing required keys {missing}")
    values = dict(data)
    values.setdefault("cot", True)
    readout = values.get("readout") or []
    if not isinstance(readout, list):
        raise ValueError(f"{source}: readout must be a list of {{key, hint, info_key, style}} mappings")
    fields_: list[ReadoutField] = []
    for position, item in enumerate(readout):
        if not isinstance(item, Mapping):
            raise ValueError(f"{source}: readout item {position} must be a mapping with at least 'key'")
        unknown_item = sorted(set(item) - _READOUT_KEYS)
        if unknown_item or "key" not in item:
            raise ValueError(
                f"{source}: readout item {position} needs 'key' and may have {sorted(_READOUT_KEYS)}; "
                f"unknown: {unknown_item}"
            )
        fields_.append(ReadoutField(**item))
    values["readout"] = tuple(fields_)
    try:
        return PromptTemplate(**values)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def chat_messages(prompt_text: str, answer: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for a processor's chat template: one user turn holding the image and the prompt.

    With ``answer``, an assistant turn follows (a supervised example). The image itself is passed
    to the processor separately; ``{"type": "image"}`` marks where it goes.
    """
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
