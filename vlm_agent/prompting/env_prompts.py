"""The built-in RL4VLM prompt of each environment (:func:`prompt_for`) and the answers a
demonstration writes for a state (:func:`answer_from_info`, :func:`expert_answer`): the read-out,
the thought the expert would have, and the action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlm_agent.prompting.templates import PromptTemplate, ReadoutField

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


def prompt_for(env_id: str, *, cot: bool = True, show_state: bool = False, history_steps: int = 0) -> PromptTemplate:
    """The built-in prompt template for a registered environment.

    Args:
        env_id: A registered id (see :func:`known_env_ids`), e.g. ``"gym_cards/Points24-v0"``.
        cot: Chain of thought (read-outs, thoughts, action) or the action-only ablation.
        show_state: Card games only: also show ``describe()``'s text (which names the cards, so
            the image becomes unnecessary). ALFWorld always shows its text observation.
        history_steps: Earlier steps of the episode the prompt recalls (K; 0: none, the paper's
            prompts). Image-only prompts recall the actions alone.

    Raises:
        ValueError: An unknown id (the message lists the known ones and how to add a template).
    """
    if env_id not in _BUILT_IN:
        raise ValueError(
            f"no built-in prompt for env id {env_id!r}; known ids: {', '.join(_BUILT_IN)}. "
            "For another environment write a YAML/JSON template and load it with "
            "vlm_agent.prompting.templates.load_prompt_template(path)"
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
        history_steps=history_steps,
    )


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
