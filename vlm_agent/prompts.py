"""Task prompts in the RL4VLM format, and the answers a perfect model would give to them.

Every task prompt has three parts (Zhai et al. 2024, "Fine-Tuning Large Vision-Language Models as
Decision-Making Agents via Reinforcement Learning", appendix): the task description, the legal
actions in text, and the demand to answer as JSON. With chain of thought (CoT) the JSON first
reads out the state seen in the image, then gives ``"thoughts"``, then the ``"action"``; the
action-only ablation asks for ``{"action": ...}`` alone. ``"action"`` is always the last key: the
CoT-scaled log-probability splits the answer there, and :mod:`vlm_agent.parsing` reads it.
The built-in texts follow the paper's, with its typos fixed; Blackjack's read-outs (dealer card,
player cards, player total) are ours, where the paper only asked the thoughts to describe totals.

>>> template = prompt_for("gym_cards/NumberLine-v0")
>>> text = template.render(env.unwrapped.describe(), env.unwrapped.legal_actions())  # doctest: +SKIP
>>> template.format_answer("+", thoughts="3 < 5, so add one.", readout={"current number": "3", "target number": "5"})
'{"current number": "3", "target number": "5", "thoughts": "3 < 5, so add one.", "action": "+"}'

Templates are plain data (:class:`PromptTemplate`); a new environment needs no code, only a YAML or
JSON file for :func:`load_prompt_template`::

    env_id: my_envs/Maze-v0
    cot: true
    instruction: >-
      You are in a maze seen from above. Reach the green square.
      You can choose between {legal_actions}.
    thoughts_hint: first say where you are and where the goal is, then choose a move
    readout:
      - {key: "position", hint: '"(x, y)"', info_key: position}

Instruction placeholders: ``{state}`` (the env's ``describe()`` text) and ``{legal_actions}`` (the
legal actions as a list, ``['-', '+']``); write ``{{`` and ``}}`` for literal braces.

The card-game prompts are image-only, as in the paper: the state is in the pixels, and the
text of ``describe()`` (which names every card) is not shown unless ``prompt_for(...,
show_state=True)`` asks for it (for text-only models, or as an ablation). The paper's code also
meant to show the EZPoints/Points24 formula in text, but built the prompt once at the start, when
the formula was empty; the formula is drawn in the image. ALFWorld prompts always carry the
text observation, the task and the admissible commands, as in the paper.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ACTION_KEY",
    "PLACEHOLDERS",
    "THOUGHTS_KEY",
    "PromptTemplate",
    "ReadoutField",
    "answer_from_info",
    "chat_messages",
    "expert_answer",
    "known_env_ids",
    "load_prompt_template",
    "prompt_for",
    "template_from_mapping",
]

ACTION_KEY = "action"
"""The JSON key of the chosen action: always the last key of an answer."""

THOUGHTS_KEY = "thoughts"
"""The JSON key of the chain of thought (CoT templates only), just before :data:`ACTION_KEY`."""

PLACEHOLDERS: frozenset[str] = frozenset({"state", "legal_actions"})
"""The only placeholders a template's instruction may use."""

ReadoutValue = str | int | float | Sequence[str | int | float]
"""A read-out value: a text, a number, or a list of them (rendered as JSON)."""

_RESPONSE_FORMAT_INTRO = "Your response should be a valid json file in the following format:"


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
    """

    env_id: str
    cot: bool
    instruction: str
    thoughts_hint: str = ""
    readout: tuple[ReadoutField, ...] = ()
    action_hint: str | None = None
    legal_actions_separator: str = ", "

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

    @property
    def answer_keys(self) -> tuple[str, ...]:
        """The JSON keys of an answer, in the order the prompt asks for them."""
        if not self.cot:
            return (ACTION_KEY,)
        return (*(f.key for f in self.readout), THOUGHTS_KEY, ACTION_KEY)

    def render(self, state_text: str, legal_actions: Sequence[str]) -> str:
        """The user message text for one step.

        Args:
            state_text: The env's text description of the state (``env.unwrapped.describe()``);
                shown only where the instruction has ``{state}``.
            legal_actions: The text actions legal now (``env.unwrapped.legal_actions()``).
        """
        if not isinstance(state_text, str):
            raise TypeError(f"state_text must be a str (env.unwrapped.describe()), got {type(state_text).__name__}")
        actions = _checked_actions(legal_actions)
        quoted = self.legal_actions_separator.join(f"'{action}'" for action in actions)
        instruction = self.instruction.format(state=state_text, legal_actions=f"[{quoted}]")
        return f"{instruction.rstrip()} {_RESPONSE_FORMAT_INTRO}\n{self._format_block(actions)}"

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


# -- the built-in templates --------------------------------------------------------------------

_NUMBER_LINE = (
    "You are playing a game called number line. You will see a target number and a current number "
    "in the image. And your goal is to move the current number closer to the target by choosing "
    "either adding or subtracting one to the current number. You can choose between {legal_actions}."
)
_BLACKJACK = (
    "You are a blackjack player. You are observing the current game state in the image: the "
    "dealer's face-up card, the dealer's face-down card, and your cards. You can choose between "
    "{legal_actions}."
)
_EZPOINTS = (
    "You are an expert card game player. You are observing two cards and the current formula in "
    "the image. You can choose between {legal_actions}. The number or operator you choose will be "
    "appended to the current formula. Note that 'A' counts as '1' and 'J', 'Q', and 'K' count as "
    "'10'. Your goal is to output a formula that evaluates to 12, and each card must be used "
    "exactly once."
)
_POINTS24 = (
    "You are an expert 24 points card game player. You are observing four cards and the current "
    "formula in the image. You can choose between {legal_actions}. The number or operator you "
    "choose will be appended to the current formula. Note that 'A' counts as '1' and 'J', 'Q', and "
    "'K' count as '10' (or as '11', '12' and '13' when those numbers are among the choices). Your "
    "goal is to output a formula that evaluates to 24, and each card must be used exactly once."
)
_ALFWORLD = (
    "You are an expert in the ALFRED Embodied Environment. You are also given the following text "
    "description of the current scene and your task: {state} Your admissible actions of the "
    "current situation are: {legal_actions}."
)
_STATE_SENTENCE = " Text description of the current state: {state}"

_FORMULA_THOUGHTS_12 = (
    "First check whether the current formula is complete and equals 12. If it is, output '='. "
    "Otherwise consider which number or operator should be appended to the current formula to make it equal 12."
)
_FORMULA_THOUGHTS_24 = (
    "First check whether the current formula is complete and equals 24. If it is, output '='. "
    "Otherwise consider which number or operator should be appended to the current formula to make it equal 24."
)


@dataclass(frozen=True)
class _BuiltIn:
    instruction: str
    thoughts_hint: str
    readout: tuple[ReadoutField, ...] = ()
    action_hint: str | None = None
    legal_actions_separator: str = ", "
    image_only: bool = True  # the instruction has no {state}; show_state=True appends it
    reasoning: Callable[[Mapping[str, Any], str], str] | None = field(default=None, compare=False)


def _number_line_reasoning(info: Mapping[str, Any], action: str) -> str:
    current, target = info["current"], info["target"]
    if action == "+" and current < target:
        return f"The current number {current} is smaller than the target {target}, so I add one to move closer."
    if action == "-" and current > target:
        return f"The current number {current} is larger than the target {target}, so I subtract one to move closer."
    return f"The current number is {current} and the target is {target}, so I choose '{action}'."


def _blackjack_reasoning(info: Mapping[str, Any], action: str) -> str:
    ace = " with a usable ace" if info.get("usable_ace") else ""
    situation = f"My cards total {info['player_sum']}{ace} and the dealer shows {info['dealer_card']}."
    if action == "hit":
        return f"{situation} Basic strategy says to take another card, so I hit."
    if action == "stand":
        return f"{situation} Basic strategy says my total is good enough here, so I stand."
    return f"{situation} I choose '{action}'."


def _formula_reasoning(info: Mapping[str, Any], action: str) -> str:
    formula = " ".join(str(token) for token in info["formula"])
    target = info["target"]
    numbers = ", ".join(str(number) for number in info["numbers"])
    if action == "=":
        used = sum(1 for token in info["formula"] if str(token).isdigit())
        if formula and used == len(info["numbers"]):
            return (
                f"The current formula {formula} uses every card ({numbers}) and equals {target}, "
                "so I finish it with '='."
            )
        return f"The cards {numbers} cannot make {target} from the formula so far, so I end the game with '='."
    shown = formula if formula else "empty"
    return (
        f"The cards are worth {numbers} and the current formula is {shown}. "
        f"Appending '{action}' keeps it on the way to {target} using every card once."
    )


def _alfworld_reasoning(info: Mapping[str, Any], action: str) -> str:
    task = info.get("task")
    if task:
        return f"My task is to {task}. The next step toward it is to {action}."
    return f"To make progress on the task, the next step is to {action}."


_CARD_VALUES_LIST = ReadoutField("cards", "[x, y]", "numbers", "list")
_BUILT_IN: dict[str, _BuiltIn] = {
    "gym_cards/NumberLine-v0": _BuiltIn(
        _NUMBER_LINE,
        "first read out the current and target number, then think carefully about which action to choose",
        (ReadoutField("current number", '"x"', "current"), ReadoutField("target number", '"x"', "target")),
        reasoning=_number_line_reasoning,
    ),
    "gym_cards/EZPoints-v0": _BuiltIn(
        _EZPOINTS,
        _FORMULA_THOUGHTS_12,
        (_CARD_VALUES_LIST, ReadoutField("current formula", '"z"', "formula", "joined")),
        action_hint='"{number}" or "{operator}"',
        reasoning=_formula_reasoning,
    ),
    "gym_cards/Points24-v0": _BuiltIn(
        _POINTS24,
        _FORMULA_THOUGHTS_24,
        (
            ReadoutField("cards", "[x, y, z, w]", "numbers", "list"),
            ReadoutField("current formula", '"z"', "formula", "joined"),
        ),
        action_hint='"{number}" or "{operator}"',
        reasoning=_formula_reasoning,
    ),
    "gym_cards/Blackjack-v0": _BuiltIn(
        _BLACKJACK,
        "first describe your total points and the dealer's points, then think about which action to choose",
        (
            ReadoutField("dealer card", '"x"', "dealer_card"),
            ReadoutField("player cards", "[x, y, ...]", "player_cards", "list"),
            ReadoutField("player total", '"x"', "player_sum"),
        ),
        reasoning=_blackjack_reasoning,
    ),
    "gym_cards/ALFWorld-v0": _BuiltIn(
        _ALFWORLD,
        "first describe what you see in the image using the text description, then carefully think "
        "about which action completes the task",
        action_hint='"{an admissible action}"',
        legal_actions_separator=",\n ",
        image_only=False,
        reasoning=_alfworld_reasoning,
    ),
}


def known_env_ids() -> tuple[str, ...]:
    """The env ids :func:`prompt_for` has built-in templates for."""
    return tuple(_BUILT_IN)


def prompt_for(env_id: str, *, cot: bool = True, show_state: bool = False) -> PromptTemplate:
    """The built-in prompt template for a registered environment.

    Args:
        env_id: A registered id (see :func:`known_env_ids`), e.g. ``"gym_cards/Points24-v0"``.
        cot: Chain of thought (read-outs, thoughts, action) or the action-only ablation.
        show_state: Card games only: also show ``describe()``'s text (which names the cards, so
            the image becomes unnecessary). ALFWorld always shows its text observation.

    Raises:
        ValueError: An unknown id (the message lists the known ones and how to add a template).
    """
    if env_id not in _BUILT_IN:
        raise ValueError(
            f"no built-in prompt for env id {env_id!r}; known ids: {', '.join(_BUILT_IN)}. "
            "For another environment write a YAML/JSON template and load it with "
            "vlm_agent.prompts.load_prompt_template(path)"
        )
    built_in = _BUILT_IN[env_id]
    instruction = built_in.instruction
    if show_state and built_in.image_only:
        instruction += _STATE_SENTENCE
    return PromptTemplate(
        env_id=env_id,
        cot=cot,
        instruction=instruction,
        thoughts_hint=built_in.thoughts_hint if cot else "",
        readout=built_in.readout if cot else (),
        action_hint=built_in.action_hint,
        legal_actions_separator=built_in.legal_actions_separator,
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


# -- demonstrations ----------------------------------------------------------------------------


def answer_from_info(template: PromptTemplate, info: Mapping[str, Any], action: str) -> str:
    """The full answer for ``action`` in the state ``info`` describes: read-outs, reasoning, action.

    Read-outs come from ``info`` through each field's ``info_key``; the one-sentence reasoning is
    task-specific for the built-in envs and generic ("I choose 'x'.") for user templates.
    Action-only templates give ``{"action": ...}``.
    """
    if not template.cot:
        return template.format_answer(action)
    readout = {f.key: f.value_from_info(info) for f in template.readout}
    built_in = _BUILT_IN.get(template.env_id)
    if built_in is not None and built_in.reasoning is not None:
        try:
            thoughts = built_in.reasoning(info, action)
        except KeyError as error:
            raise ValueError(
                f"info lacks {error} needed to explain a {template.env_id} move; its keys are {sorted(info)}. "
                "Pass the info dict of the env's last reset() or step()"
            ) from None
    else:
        thoughts = f"I choose '{action}'."
    return template.format_answer(action, thoughts=thoughts, readout=readout)


def expert_answer(template: PromptTemplate, env: Any, info: Mapping[str, Any]) -> str:
    """The expert's full answer in the current state of ``env`` (a demonstration for SFT).

    Args:
        template: The prompt the answer replies to.
        env: The environment (wrapped or not); its ``unwrapped`` gives ``legal_actions()`` and
            ``expert_action()`` as in docs/CONTRACTS.md.
        info: The info dict from the env's last ``reset()`` or ``step()`` (the read-outs).
    """
    unwrapped = getattr(env, "unwrapped", env)
    legal = unwrapped.legal_actions()
    index = int(unwrapped.expert_action())
    if not 0 <= index < len(legal):
        raise ValueError(f"expert_action() returned {index}, outside the {len(legal)} legal actions")
    return answer_from_info(template, info, legal[index])


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
