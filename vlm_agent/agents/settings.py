""":class:`AgentSettings`: how a policy was prompted and sampled in training (chain of thought, state
text, prompt template, temperature, answer length, invalid-answer rule). The trainer and SFT write it
next to the saved model (:data:`AGENT_SETTINGS_FILE`); ``vlm-agent eval`` reads it back, so a policy
is evaluated the way it was trained unless a flag says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File written next to a saved model by :func:`write_agent_settings`.
AGENT_SETTINGS_FILE = "agent_settings.json"



# --------------------------------------------------------------------------------------------
# Play settings carried by a saved policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentSettings:
    """How an agent is prompted, sampled and held to the rules; ``None`` means "not recorded".

    The same type serves three layers, merged field by field with :meth:`overridden_by`: the
    paper's defaults (:data:`PAPER_AGENT_SETTINGS`), what a saved policy recorded in training,
    and what the command line sets explicitly. The first layer to set a field wins from the top:
    command line, then the saved policy, then the paper.

    Attributes:
        env_id: The environment the policy was trained on (informational; eval does not switch
            environments because of it).
        cot: Chain-of-thought prompt (``{"thoughts", "action"}``) or action-only.
        show_state: Card games: the state is also written as text into the prompt.
        prompt_template: A custom :class:`vlm_agent.prompting.templates.PromptTemplate` as a plain mapping
            (``dataclasses.asdict``), or ``None`` for the built-in prompt of the evaluated env.
        temperature: Sampling temperature (> 0).
        max_new_tokens: Answer length limit in tokens.
        invalid_action: ``"random"`` (a uniformly random legal move, the paper's card games) or
            ``"penalty"`` (``invalid_action_fallback`` and ``-invalid_action_penalty`` reward).
        invalid_action_penalty: Subtracted from the reward of an unusable answer (penalty mode).
        invalid_action_fallback: Legal action (index or text) taken in penalty mode.
        history_steps: Earlier steps of the episode the prompt recalls (K; 0: none).
    """

    env_id: str | None = None
    cot: bool | None = None
    show_state: bool | None = None
    prompt_template: Mapping[str, Any] | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    invalid_action: str | None = None
    invalid_action_penalty: float | None = None
    invalid_action_fallback: int | str | None = None
    history_steps: int | None = None

    def __post_init__(self) -> None:
        if self.invalid_action not in (None, "random", "penalty", "nothing"):
            raise ValueError(
                f"invalid_action must be 'random', 'penalty' or 'nothing', got {self.invalid_action!r}"
            )
        if self.history_steps is not None and (isinstance(self.history_steps, bool)
                                               or not isinstance(self.history_steps, int) or self.history_steps < 0):
            raise ValueError(f"history_steps must be an integer >= 0, got {self.history_steps!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (paper: 0.2), got {self.temperature}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (paper: 256), got {self.max_new_tokens}")
        if self.invalid_action_penalty is not None and self.invalid_action_penalty < 0:
            raise ValueError(
                f"invalid_action_penalty must be >= 0, got {self.invalid_action_penalty}"
            )

    def overridden_by(self, other: AgentSettings) -> AgentSettings:
        """These settings with every field that ``other`` sets (not ``None``) replaced."""
        changes = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)
                   if getattr(other, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary of every field."""
        data = dataclasses.asdict(self)
        if self.prompt_template is not None:
            data["prompt_template"] = dict(self.prompt_template)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "agent settings") -> AgentSettings:
        """Inverse of :meth:`to_dict`; ValueError naming ``source`` for unknown keys or values."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None


PAPER_AGENT_SETTINGS = AgentSettings(
    cot=True, show_state=False, prompt_template=None, temperature=0.2, max_new_tokens=256,
    invalid_action="random", invalid_action_penalty=1.0, invalid_action_fallback=0, history_steps=0,
)
"""The RL4VLM paper's card-game settings: what an agent gets where nothing else is recorded."""


def write_agent_settings(directory: str | Path, settings: AgentSettings) -> Path:
    """Write ``settings`` as :data:`AGENT_SETTINGS_FILE` into the saved model folder ``directory``."""
    path = Path(directory) / AGENT_SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_agent_settings(directory: str | Path) -> AgentSettings | None:
    """The settings saved in ``directory``, or ``None`` where none were written.

    Raises:
        ValueError: The file exists but is not valid JSON or holds unknown keys/values.
    """
    path = Path(directory) / AGENT_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it or save the policy again") from None
    return AgentSettings.from_dict(data, source=str(path))
