"""Options of an evaluation run: one dataclass for `vlm-agent eval`, the benchmarks and Python.

:class:`EvalConfig` is parsed like the trainer's :class:`vlm_agent.training.ppo_config.VLMPPOConfig`: every
field's ``help`` is its ``--help`` line and ``--config FILE.yaml`` sets fields by name
(``trl.TrlParser``). ``vlm-agent eval`` and ``benchmarks/prompting_baselines.py`` read the same
fields; Python callers build it directly.

Prompt and generation fields default to ``None``, "not set here": each method then plays with
what its saved policy recorded in training (``agent_settings.json``, see
:class:`vlm_agent.agents.settings.AgentSettings`), and where nothing is recorded, with the paper's
settings (:data:`vlm_agent.agents.settings.PAPER_AGENT_SETTINGS`). A value given here overrides both.

This module imports nothing heavy (no torch, no gymnasium, no API client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vlm_agent.agents.settings import AgentSettings
from vlm_agent.rollout.environments import EnvKwargs

CARD_ENV_IDS = (
    "gym_cards/NumberLine-v0",
    "gym_cards/EZPoints-v0",
    "gym_cards/Points24-v0",
    "gym_cards/Blackjack-v0",
)
"""The four card environments of the paper's Table 1, in the paper's column order."""

METHOD_SPEC_HELP = (
    "each one of: random, expert, openai:MODEL (any OpenAI-compatible server, see --base_url), "
    "gemini:MODEL, local:PATH (a saved policy, a run folder (its policy/ is used) or a Hugging "
    "Face model folder); prefix blank: to show the agent blank frames instead of the images (the "
    "no-image control, e.g. blank:local:runs/r), other: to show it other episodes' frames (the "
    "other-state control, one env at a time); prefix NAME= to set the row name, e.g. "
    "warm=local:runs/r/base_model"
)

DEFAULT_NUM_ENVS = 16
"""Environments stepped side by side by default: a local policy answers 16 prompts per generate
call (benchmarks/README.md, "Batched evaluation", measures the speed-up over one)."""


@dataclass
class EvalConfig:
    """Everything an evaluation run needs: methods, environments, episodes, prompts, API access.

    Episodes use held-out seeds (``vlm_agent.rollout.loop.held_out_seed``), never a training seed.
    See each field's ``help`` (``vlm-agent eval --help``).
    """

    # > What to evaluate
    methods: list[str] = field(
        default_factory=lambda: ["random", "expert"],
        metadata={"help": f"Agents to evaluate, {METHOD_SPEC_HELP}."},
    )
    env_ids: list[str] = field(
        default_factory=lambda: ["gym_cards/NumberLine-v0"],
        metadata={"help": "Gymnasium ids to evaluate every method on, e.g. gym_cards/NumberLine-v0."},
    )
    episodes: int = field(default=100, metadata={"help": "Episodes per (method, environment)."})
    seed: int = field(
        default=0,
        metadata={"help": "Run seed; episode i resets with 1e9 + seed + i (held out from training)."},
    )
    num_envs: int = field(
        default=DEFAULT_NUM_ENVS,
        metadata={"help": "Environments stepped side by side; their prompts go to the agent as one batch "
                  "(one generate call for local policies, concurrent requests for API methods)."},
    )
    env_kwargs: EnvKwargs = field(
        default_factory=EnvKwargs,
        metadata={"help": "Options of gymnasium.make for every environment, a JSON or YAML mapping, e.g. "
                  "'{\"max_position\": 8}' (NumberLine) or '{\"split\": \"eval\"}' (ALFWorld's held-out games)."},
    )

    # > Prompt, generation and rules (None: the policy's saved training settings, else the paper's)
    cot: Optional[bool] = field(
        default=None,
        metadata={"help": "Chain-of-thought prompt (true) or action-only (false). Default: as the policy "
                  "was trained, else true."},
    )
    show_state: Optional[bool] = field(
        default=None,
        metadata={"help": "Card games: also write the state as text into the prompt. Default: as the "
                  "policy was trained, else false (the paper's image-only prompts)."},
    )
    temperature: Optional[float] = field(
        default=None,
        metadata={"help": "Sampling temperature (> 0). Default: as the policy was trained, else 0.2."},
    )
    max_new_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "Answer length limit in tokens. Default: as the policy was trained, else 256."},
    )
    invalid_action: Optional[str] = field(
        default=None,
        metadata={"help": "Unusable answers: random (a random legal move, the paper) or penalty "
                  "(invalid_action_fallback and -invalid_action_penalty reward) or nothing (ALFWorld: "
                  "the paper's 'nothing happens, reward -1'). Default: as the policy was trained, else random."},
    )
    invalid_action_penalty: Optional[float] = field(
        default=None, metadata={"help": "Reward subtracted for an unusable answer in penalty mode (>= 0)."}
    )
    invalid_action_fallback: Optional[int] = field(
        default=None, metadata={"help": "Index of the legal action an unusable answer plays in penalty mode."}
    )
    history_steps: Optional[int] = field(
        default=None,
        metadata={"help": "Earlier steps of the episode the prompt recalls (K). Default: as the policy was "
                  "trained, else 0."},
    )

    # > API methods (openai:, gemini:)
    base_url: Optional[str] = field(
        default=None,
        metadata={"help": "Server of openai:/gemini: methods (vLLM, SGLang, Ollama, a proxy); empty: the "
                  "provider's public endpoint."},
    )
    concurrency: int = field(default=4, metadata={"help": "Requests in flight at once per API method."})
    cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "On-disk answer cache of API methods: a rerun sends no request twice."},
    )
    timeout_s: float = field(default=60.0, metadata={"help": "Per-request timeout of API methods, seconds."})
    max_retries: int = field(
        default=6, metadata={"help": "Retries after a rate limit (429), server error (5xx) or timeout."}
    )
    retry_base_delay_s: float = field(
        default=1.0, metadata={"help": "First backoff wait between retries, seconds (doubled per retry)."}
    )
    retry_max_delay_s: float = field(default=60.0, metadata={"help": "Longest backoff wait, seconds."})

    # > local: methods sampled on a vLLM server (README, "Rollouts with vLLM")
    rollout_engine: str = field(
        default="hf",
        metadata={"help": "What samples local: methods: 'hf' (Hugging Face generate in this process) or 'vllm' "
                  "(a vLLM server: --vllm_url, or a local one started for each method; a saved LoRA policy is "
                  "loaded into it as an adapter)."},
    )
    vllm_url: Optional[str] = field(
        default=None, metadata={"help": "A running vLLM server serving the methods' base model (http://host:port)."}
    )
    vllm_python: Optional[str] = field(
        default=None, metadata={"help": "Python of the vLLM venv for a local server (default $VLM_AGENT_VLLM_PYTHON, "
                                        "else ./.venv-vllm/bin/python)."}
    )
    vllm_server_args: str = field(
        default="", metadata={"help": "More flags for a local vLLM server, e.g. '--enforce-eager --max-model-len 1024'."}
    )

    # > Output
    out_dir: str = field(default="eval_results", metadata={"help": "Folder for the Markdown, CSV, PNG and JSON results."})
    stem: str = field(default="evaluation", metadata={"help": "File name stem of the results."})
    title: str = field(default="Evaluation", metadata={"help": "Title of the Markdown table and the plot."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        self.methods = list(self.methods)
        self.env_ids = list(self.env_ids)
        self.env_kwargs = EnvKwargs(self.env_kwargs)

        def fail(name: str, problem: str, fix: str) -> None:
            raise ValueError(f"EvalConfig.{name}={getattr(self, name)!r} {problem}; {fix}")

        if not self.methods:
            fail("methods", "is empty", "name at least one, e.g. --methods random expert")
        if not self.env_ids:
            fail("env_ids", "is empty", "name at least one, e.g. --env_ids gym_cards/NumberLine-v0")
        for name in ("episodes", "num_envs", "concurrency"):
            if getattr(self, name) < 1:
                fail(name, "must be a positive integer", f"set --{name} to 1 or more")
        for name in ("timeout_s", "retry_base_delay_s", "retry_max_delay_s"):
            if not getattr(self, name) > 0:
                fail(name, "must be positive", f"set --{name} above 0")
        if self.rollout_engine not in ("hf", "vllm"):
            fail("rollout_engine", "is not an engine", "choose hf or vllm")
        if self.max_retries < 0:
            fail("max_retries", "must not be negative", "set --max_retries to 0 or more")
        if self.invalid_action_fallback is not None and self.invalid_action_fallback < 0:
            fail("invalid_action_fallback", "must not be negative", "use a legal action's index")
        if self.history_steps is not None and self.history_steps < 0:
            fail("history_steps", "must not be negative", "set --history_steps to 0 or more")
        try:
            self.agent_settings()
        except ValueError as error:
            raise ValueError(f"EvalConfig: {error}") from None

    def agent_settings(self) -> AgentSettings:
        """The prompt, generation and rule settings this config sets explicitly (the rest ``None``)."""
        return AgentSettings(
            cot=self.cot, show_state=self.show_state, temperature=self.temperature,
            max_new_tokens=self.max_new_tokens, invalid_action=self.invalid_action,
            invalid_action_penalty=self.invalid_action_penalty,
            invalid_action_fallback=self.invalid_action_fallback, history_steps=self.history_steps,
        )
