"""Turn a method spec from a command line (``"openai:gpt-4o"``, ``"random"``) into an agent.

Specs:

- ``random``: :class:`~vlm_agent.agents.simple.RandomAgent` (seeded with the run seed).
- ``expert``: :class:`~vlm_agent.agents.simple.ExpertAgent`.
- ``openai:MODEL``: :class:`~vlm_agent.agents.openai_chat.OpenAIChatAgent`; ``base_url`` picks
  the server (vLLM, SGLang, Ollama, ...).
- ``gemini:MODEL``: :class:`~vlm_agent.agents.gemini.GeminiAgent`.
- ``local:PATH``: :class:`~vlm_agent.agents.local_hf.LocalHFAgent`, a saved
  :class:`vlm_agent.models.policy.VLMPolicy` (a trained checkpoint or a Hugging Face model folder). A
  training run folder works too: its ``policy/`` is used.
- ``blank:SPEC`` (any of the above): the control of an image-reading agent, the same agent shown
  a frame of each image's background colour instead (:class:`~vlm_agent.agents.blank.BlankImages`);
  what it still scores, it scores without reading the image.
- ``other:SPEC``: the stronger control, the same agent shown at each step the first frame of
  another evaluation episode (:class:`~vlm_agent.agents.blank.OtherStateImages`; one env at a
  time): an agent that acts on what is drawn plays another state's move.
- ``NAME=SPEC`` (any of the above): the same agent, shown as ``NAME`` in the result tables, e.g.
  ``warm_start=local:runs/r/base_model``. Without a name, rows are named after the spec; two
  ``local:`` paths with the same last folder (``a/policy``, ``b/policy``) get as many trailing
  path parts as it takes to tell them apart.

Each kind is imported only when asked for, so ``random`` needs neither an API SDK nor torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from vlm_agent.agents.settings import PAPER_AGENT_SETTINGS, AgentSettings
from vlm_agent.evaluation.eval_config import METHOD_SPEC_HELP, EvalConfig

if TYPE_CHECKING:
    from vlm_agent.rollout.agent import Agent

#: The saved-policy folder inside a training run folder.
RUN_POLICY_DIR = "policy"

#: The prefix of a method spec that shows the agent blank frames (the no-image control).
BLANK_PREFIX = "blank:"

#: The prefix of a method spec that shows the agent other episodes' frames (the other-state control).
OTHER_PREFIX = "other:"

#: How many other episodes' frames the other-state control draws from.
OTHER_FRAMES = 64

_NAME = re.compile(r"^[A-Za-z0-9_.\- ()]+$")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method spec.

    Attributes:
        kind: ``random``, ``expert``, ``openai``, ``gemini`` or ``local``.
        argument: The model name (API kinds) or the path as given (``local``); ``""`` otherwise.
        name: The row name given with ``NAME=SPEC``, or ``None``.
        blank: ``blank:SPEC``: the agent is shown blank frames instead of the images.
        other: ``other:SPEC``: the agent is shown other episodes' frames instead of the images.
    """

    kind: str
    argument: str
    name: str | None = None
    blank: bool = False
    other: bool = False

    @property
    def prefix(self) -> str:
        return BLANK_PREFIX if self.blank else OTHER_PREFIX if self.other else ""

    @property
    def label(self) -> str:
        """The row name of an unnamed spec (a ``local:`` path's is shortened by :func:`default_labels`)."""
        plain = self.kind if not self.argument else f"{self.kind}:{self.argument}"
        return f"{self.prefix}{plain}"


def parse_method(spec: str) -> MethodSpec:
    """Split ``[NAME=][blank:|other:]KIND[:ARGUMENT]``; ValueError (saying the accepted forms) for a bad spec."""
    text = spec.strip()
    name = None
    prefix, equals, rest = text.partition("=")
    # A name holds no ':' or '/', so 'local:dir=x/policy' stays a path.
    if equals and _NAME.match(prefix) and prefix.strip():
        name, text = prefix.strip(), rest.strip()
    blank = text.lower().startswith(BLANK_PREFIX)
    other = text.lower().startswith(OTHER_PREFIX)
    if blank or other:
        text = text[len(BLANK_PREFIX if blank else OTHER_PREFIX):].strip()
    kind, separator, argument = text.partition(":")
    kind = kind.strip().lower()
    argument = argument.strip()
    if kind in ("random", "expert") and not separator:
        return MethodSpec(kind, "", name, blank, other)
    if kind in ("openai", "gemini", "local") and argument:
        return MethodSpec(kind, argument, name, blank, other)
    raise ValueError(f"unknown method {spec!r}: use {METHOD_SPEC_HELP}")


def local_policy_dir(path: str | Path) -> Path:
    """The model folder a ``local:`` spec names: the folder itself, or a run folder's ``policy/``.

    Raises:
        FileNotFoundError: No such folder, or a run folder without a finished ``policy/``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"local model {str(path)!r} is not a folder; pass a saved policy, a training run folder "
            "or a Hugging Face model folder, e.g. local:runs/<run>/policy"
        )
    if (folder / "config.json").is_file() and not (folder / RUN_POLICY_DIR).is_dir():
        return folder  # a model folder (a run folder's config.json is the run's config, next to policy/)
    if (folder / RUN_POLICY_DIR).is_dir():
        return folder / RUN_POLICY_DIR
    if (folder / "metrics.jsonl").is_file():
        raise FileNotFoundError(
            f"{folder} is a training run without a final {RUN_POLICY_DIR}/ folder (unfinished?); "
            "finish it with --resume, or evaluate a checkpoint's policy folder"
        )
    return folder


def default_labels(specs: Sequence[str]) -> list[str]:
    """Unique row names for ``specs`` (see the module docstring).

    Raises:
        ValueError: Two specs would share a row name (the same spec twice, or two equal NAME=).
    """
    parsed = [parse_method(spec) for spec in specs]
    labels: list[str | None] = [p.name for p in parsed]
    local_parts = {index: PurePath(p.argument.rstrip("/\\")).parts for index, p in enumerate(parsed)
                   if p.kind == "local" and p.name is None}
    for index, p in enumerate(parsed):
        if p.name is None and p.kind != "local":
            labels[index] = p.label
    # Local paths: the shortest tail of path parts that no other local path shares.
    for index, parts in local_parts.items():
        others = [other for key, other in local_parts.items() if key != index and other != parts]
        length = 1
        while length < len(parts) and any(other[-length:] == parts[-length:] for other in others):
            length += 1
        labels[index] = parsed[index].prefix + "local:" + "/".join(parts[-length:])
    seen: dict[str, str] = {}
    for spec, label in zip(specs, labels):
        assert label is not None
        if label in seen:
            raise ValueError(
                f"methods {seen[label]!r} and {spec!r} would both be named {label!r} in the results; "
                "list each once, or name them with NAME=SPEC, e.g. a=local:runs/a/policy"
            )
        seen[label] = spec
    return [str(label) for label in labels]


def saved_agent_settings(spec: str) -> AgentSettings | None:
    """What a ``local:`` method recorded in training (None for other kinds or where nothing is saved)."""
    method = parse_method(spec)
    if method.kind != "local":
        return None
    from vlm_agent.agents.local_hf import saved_settings

    return saved_settings(local_policy_dir(method.argument))


def build_agent(spec: str, config: EvalConfig | None = None, *,
                settings: AgentSettings | None = None) -> Agent:
    """The agent a method spec names (see the module docstring); ValueError for a bad spec.

    Args:
        spec: The method spec.
        config: API access, retries and the seed; default :class:`EvalConfig`'s defaults.
        settings: Temperature and answer length to sample with; default: the config's, else the
            saved policy's, else the paper's.
    """
    config = config or EvalConfig()
    method = parse_method(spec)
    if settings is None:
        settings = PAPER_AGENT_SETTINGS.overridden_by(
            saved_agent_settings(spec) or AgentSettings()).overridden_by(config.agent_settings())
    agent = _build(method, config, settings)
    if method.blank:
        from vlm_agent.agents.blank import BlankImages

        return BlankImages(agent)
    if method.other:
        from vlm_agent.agents.blank import OtherStateImages, other_episode_frames

        if len(config.env_ids) != 1:
            raise ValueError(f"method {spec!r}: the other-state control evaluates one environment at a time, "
                             f"got {len(config.env_ids)}")
        frames = other_episode_frames(config.env_ids[0], config.env_kwargs, OTHER_FRAMES, config.seed + 1)
        return OtherStateImages(agent, frames, seed=config.seed)
    return agent


def _build(method: MethodSpec, config: EvalConfig, settings: AgentSettings) -> Agent:
    if method.kind in ("random", "expert"):
        from vlm_agent.agents.simple import ExpertAgent, RandomAgent

        return RandomAgent(seed=config.seed) if method.kind == "random" else ExpertAgent()
    if method.kind == "local":
        from vlm_agent.agents.local_hf import LocalHFAgent

        vllm = None
        if config.rollout_engine == "vllm":
            from vlm_agent.agents.local_hf import VLLMOptions

            vllm = VLLMOptions(url=config.vllm_url, python=config.vllm_python, server_args=config.vllm_server_args)
        return LocalHFAgent.from_pretrained(
            local_policy_dir(method.argument), temperature=settings.temperature,
            max_new_tokens=settings.max_new_tokens, seed=config.seed, vllm=vllm,
        )
    from vlm_agent.agents.retry import RetryPolicy

    retry = RetryPolicy(max_retries=config.max_retries, base_delay_s=config.retry_base_delay_s,
                        max_delay_s=config.retry_max_delay_s, seed=config.seed)
    options = {
        "base_url": config.base_url, "concurrency": config.concurrency,
        "cache_dir": config.cache_dir, "timeout_s": config.timeout_s, "retry": retry,
        "temperature": settings.temperature, "max_new_tokens": settings.max_new_tokens,
    }
    if method.kind == "openai":
        from vlm_agent.agents.openai_chat import OpenAIChatAgent

        return OpenAIChatAgent(method.argument, **options)
    from vlm_agent.agents.gemini import GeminiAgent

    return GeminiAgent(method.argument, **options)
