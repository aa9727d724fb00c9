"""Evaluate any agent on the gym_cards environments with the trainer's prompts and parser.

The evaluation loop is the same loop the trainer rolls out (environment -> prompt -> answer text ->
parse -> step), but the "answer text" comes from any :class:`Agent`: a prompted API model
(OpenAI-compatible or Gemini), a local Hugging Face policy, a random player or the environment's
expert. Because every agent sees the same prompt (:func:`vlm_agent.prompts.prompt_for`) and every
answer goes through the same parser (:func:`vlm_agent.parsing.parse_action`), the success rates of
prompted frontier models and of our RL-trained agent compare like for like, as in Table 1 of the
RL4VLM paper.

Seeds. Evaluation episodes are held out from training: episode ``i`` of a run with seed ``s``
resets its environment with ``held_out_seed(s, i) = EVAL_SEED_OFFSET + s + i`` where
``EVAL_SEED_OFFSET = 1_000_000_000``. Training seeds each environment once with a small seed
(``seed + env_index``, :mod:`vlm_agent.rollout`) and then follows its generator, so no
evaluation episode starts from a training seed as long as training seeds stay below 10**9
(small games such as NumberLine, with 30 start states, of course repeat states; held-out seeds
keep the deal sequence independent, not the state space).

Each episode's fallback random moves (the paper's answer to unusable text) draw from
:func:`rescue_generator`: a child (``SeedSequence.spawn``) of the seed sequence that gymnasium
deals the episode from, so the rescue is reproducible, does not depend on ``num_envs`` for
deterministic agents, and is statistically independent of the deal. (Seeding it with the episode
seed itself, as before, replayed the deal's own random stream: on NumberLine the first rescue was
the right move in 81% of episodes, and an agent whose every answer was unusable beat random play.)

Example::

    from vlm_agent.baselines.simple import ExpertAgent
    from vlm_agent.evaluation import evaluate_agent

    result = evaluate_agent(ExpertAgent(), "gym_cards/NumberLine-v0", episodes=50, seed=0)
    print(result.success_rate, result.ci95)

This module imports neither torch nor any API client; tqdm only when a progress bar is shown and
matplotlib only when a plot is written.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# The agent protocol lives in vlm_agent.agents (which the baselines import, so that they never
# import this module); it is re-exported here for code written against the former location.
from vlm_agent.agents import PAPER_AGENT_SETTINGS, Agent, AgentInput, AgentSettings, TokenUsage
from vlm_agent.eval_config import CARD_ENV_IDS, DEFAULT_NUM_ENVS, EvalConfig
from vlm_agent.environments import observation_image, validate_env_id

if TYPE_CHECKING:
    from vlm_agent.parsing import InvalidActionPolicy
    from vlm_agent.prompts import PromptTemplate

__all__ = [
    "CARD_ENV_IDS", "EVAL_SEED_OFFSET", "Agent", "AgentInput", "EpisodeRecord", "EvalConfig", "EvalResult",
    "TokenUsage", "evaluate_agent", "held_out_seed", "make_eval_env", "rescue_generator", "results_csv",
    "results_markdown", "run_eval", "validate_env_id", "wilson_interval", "write_results", "compare_before_after",
    "method_settings",
]

EVAL_SEED_OFFSET = 1_000_000_000
"""Added to every evaluation seed so that evaluation episodes never reuse a training seed."""

Z_95 = 1.959963984540054
"""Standard normal quantile for a two-sided 95% interval, Phi^-1(0.975)."""


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    With ``p = successes / trials`` and ``n = trials``::

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        interval  = (centre - halfwidth, centre + halfwidth)

    (Wilson, 1927). Unlike the normal approximation it stays inside [0, 1] and is informative at
    0% and 100% success, which is where many baselines sit. ``trials == 0`` gives (0, 1): nothing
    is known.

    Args:
        successes: Number of successes, ``0 <= successes <= trials``.
        trials: Number of trials.
        z: Normal quantile; the default gives a 95% interval.

    Returns:
        ``(low, high)`` as fractions in [0, 1].
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(
            f"wilson_interval needs 0 <= successes <= trials, got successes={successes}, "
            f"trials={trials}"
        )
    if trials == 0:
        return (0.0, 1.0)
    n = float(trials)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    halfwidth = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # At p = 0 (p = 1) the lower (upper) end is exactly 0 (1); rounding would leave 1e-16 off.
    low = 0.0 if successes == 0 else max(0.0, centre - halfwidth)
    high = 1.0 if successes == trials else min(1.0, centre + halfwidth)
    return (low, high)


def held_out_seed(seed: int, episode: int) -> int:
    """Reset seed of evaluation episode ``episode``: ``EVAL_SEED_OFFSET + seed + episode``."""
    return EVAL_SEED_OFFSET + seed + episode


def rescue_generator(episode_seed: int) -> np.random.Generator:
    """The generator of an episode's random moves for unusable answers.

    ``env.reset(seed=episode_seed)`` deals from ``PCG64(SeedSequence(episode_seed))``
    (``gymnasium.utils.seeding.np_random``). The rescue draws from the first child that sequence
    spawns: the same run seed and episode always give the same rescue, and numpy's seed sequences
    make parent and child streams independent, so the rescue knows nothing about the deal.
    """
    (child,) = np.random.SeedSequence(episode_seed).spawn(1)
    return np.random.Generator(np.random.PCG64(child))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeRecord:
    """The outcome of one evaluation episode.

    Attributes:
        episode: Episode index within the run (0-based).
        seed: The seed the environment was reset with.
        success: ``info["success"]`` at the episode's last step.
        episode_return: Sum of rewards.
        length: Number of steps.
        invalid_steps: Steps whose answer named no single legal action.
    """

    episode: int
    seed: int
    success: bool
    episode_return: float
    length: int
    invalid_steps: int


@dataclass(frozen=True)
class EvalResult:
    """Summary of one agent on one environment.

    Attributes:
        method: The agent's name.
        env_id: The Gymnasium id evaluated.
        cot: Whether the prompt asked for chain-of-thought.
        episodes: Episodes played.
        successes: Episodes that ended with ``info["success"]``.
        success_rate: ``successes / episodes``.
        ci95: Wilson 95% interval of the success rate, ``(low, high)``.
        mean_return: Mean episode return.
        mean_length: Mean episode length in steps.
        steps: Total environment steps.
        invalid_rate: Share of steps whose answer was unusable (no single legal action named).
        usage: Tokens and requests spent by this run (cache hits cost nothing).
        records: One :class:`EpisodeRecord` per episode, in episode order.
        show_state: Whether the prompt also gave the state as text.
        invalid_action: The rule for unusable answers, ``"random"`` or ``"penalty"``.
    """

    method: str
    env_id: str
    cot: bool
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_return: float
    mean_length: float
    steps: int
    invalid_rate: float
    usage: TokenUsage
    records: tuple[EpisodeRecord, ...] = field(repr=False)
    show_state: bool = False
    invalid_action: str = "random"

    @classmethod
    def from_records(cls, method: str, env_id: str, cot: bool, records: Sequence[EpisodeRecord],
                     usage: TokenUsage, *, show_state: bool = False,
                     invalid_action: str = "random") -> EvalResult:
        """Aggregate per-episode records into a result."""
        episodes = len(records)
        successes = sum(record.success for record in records)
        steps = sum(record.length for record in records)
        invalid = sum(record.invalid_steps for record in records)
        return cls(
            method=method,
            env_id=env_id,
            cot=cot,
            episodes=episodes,
            successes=successes,
            success_rate=successes / episodes if episodes else 0.0,
            ci95=wilson_interval(successes, episodes),
            mean_return=float(np.mean([r.episode_return for r in records])) if records else 0.0,
            mean_length=steps / episodes if episodes else 0.0,
            steps=steps,
            invalid_rate=invalid / steps if steps else 0.0,
            usage=usage,
            records=tuple(records),
            show_state=show_state,
            invalid_action=invalid_action,
        )

    def summary(self) -> dict[str, Any]:
        """Flat dictionary of the headline numbers (one CSV row), without per-episode records."""
        return {
            "method": self.method,
            "env_id": self.env_id,
            "cot": self.cot,
            "show_state": self.show_state,
            "invalid_action": self.invalid_action,
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": round(self.success_rate, 6),
            "ci95_low": round(self.ci95[0], 6),
            "ci95_high": round(self.ci95[1], 6),
            "invalid_rate": round(self.invalid_rate, 6),
            "mean_return": round(self.mean_return, 6),
            "mean_length": round(self.mean_length, 6),
            "steps": self.steps,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "requests": self.usage.requests,
            "cache_hits": self.usage.cache_hits,
            "retries": self.usage.retries,
        }


# --------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------


@dataclass
class _EpisodeInProgress:
    """Book-keeping of the episode currently running in one environment slot."""

    episode: int
    seed: int
    observation: np.ndarray
    rng: np.random.Generator
    episode_return: float = 0.0
    length: int = 0
    invalid_steps: int = 0


def make_eval_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build one environment by id, with an error that suggests the right id if it is unknown."""
    import gymnasium as gym

    validate_env_id(env_id)
    try:
        return gym.make(env_id, **dict(env_kwargs or {}))
    except (gym.error.Error, TypeError) as error:
        raise ValueError(f"cannot build environment {env_id!r} with env_kwargs {dict(env_kwargs or {})}: "
                         f"{error}") from error


def _agent_input(env: Any, observation: np.ndarray, prompt_template: PromptTemplate, *,
                 with_expert: bool) -> AgentInput:
    """Build the agent's view of the current state through the env contract (docs/CONTRACTS.md)."""
    unwrapped = env.unwrapped
    legal_actions = list(unwrapped.legal_actions())
    return AgentInput(
        image=observation_image(observation),  # an image array, or a mapping's "image" (ALFWorld)
        prompt=prompt_template.render(unwrapped.describe(), legal_actions),
        legal_actions=legal_actions,
        expert_action=int(unwrapped.expert_action()) if with_expert else None,
    )


def evaluate_agent(
    agent: Agent,
    env_id: str,
    *,
    episodes: int,
    seed: int,
    cot: bool = True,
    invalid_policy: InvalidActionPolicy | str = "random",
    num_envs: int = DEFAULT_NUM_ENVS,
    env_kwargs: Mapping[str, Any] | None = None,
    show_state: bool = False,
    prompt_template: PromptTemplate | None = None,
    progress: bool = True,
    name: str | None = None,
) -> EvalResult:
    """Play ``episodes`` held-out episodes of ``env_id`` with ``agent`` and summarise them.

    Each step, every running environment's image, prompt (``prompt_for(env_id, cot=cot)``
    rendered with ``describe()`` and ``legal_actions()``) and, for agents that use it, the
    expert move go to the agent in one batch; each answer goes through
    :func:`vlm_agent.parsing.parse_action`, and unusable ones are resolved with ``invalid_policy``
    (:func:`vlm_agent.parsing.resolve_action`), exactly as in training. An episode succeeds when
    its last step's ``info["success"]`` is true.

    Args:
        agent: Any :class:`Agent`.
        env_id: Gymnasium id, e.g. ``"gym_cards/NumberLine-v0"``.
        episodes: Number of episodes to play (> 0).
        seed: Run seed; episode ``i`` resets with :func:`held_out_seed` ``(seed, i)``.
        cot: Ask for chain-of-thought (``{"thoughts", "action"}``) instead of action only.
        invalid_policy: What an unusable answer does: an
            :class:`vlm_agent.parsing.InvalidActionPolicy` or its mode, ``"random"`` (a uniformly
            random legal move, the paper's rule) or ``"penalty"`` (legal action 0 and -1 reward,
            counted in ``mean_return``).
        num_envs: Environments run side by side; their inputs reach the agent as one batch (one
            generate call of a local policy; concurrent requests of a remote agent). Deterministic
            agents and the random rescue give the same records for any value.
        env_kwargs: Keyword arguments for ``gym.make``.
        show_state: Also write the state as text into the card-game prompts (for text-only
            models, or as an ablation); the paper's prompts are image-only.
        prompt_template: A template to use instead of ``prompt_for(env_id, ...)``, for
            environments without a built-in prompt (see
            :func:`vlm_agent.prompts.load_prompt_template`).
        progress: Show a tqdm bar over episodes (False: tqdm is not imported).
        name: Row name of the result; default ``agent.name``.

    Returns:
        The :class:`EvalResult`, with per-episode records in episode order.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    if num_envs <= 0:
        raise ValueError(f"num_envs must be positive, got {num_envs}")
    from vlm_agent.parsing import parse_action, resolve_action
    from vlm_agent.prompts import prompt_for

    validate_env_id(env_id)
    policy = _invalid_action_policy(invalid_policy)
    if prompt_template is None:
        prompt_template = prompt_for(env_id, cot=cot, show_state=show_state)
    envs = [make_eval_env(env_id, env_kwargs) for _ in range(min(num_envs, episodes))]
    usage_before = agent.usage()
    records: list[EpisodeRecord | None] = [None] * episodes
    slots: list[_EpisodeInProgress | None] = [None] * len(envs)
    next_episode = 0

    def start_episode(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            slots[slot] = None
            return
        episode_seed = held_out_seed(seed, next_episode)
        observation, _ = envs[slot].reset(seed=episode_seed)
        slots[slot] = _EpisodeInProgress(
            episode=next_episode, seed=episode_seed, observation=observation,
            rng=rescue_generator(episode_seed),
        )
        next_episode += 1

    method = agent.name if name is None else name
    bar = _progress_bar(episodes, f"{method} on {env_id}", enabled=progress)
    try:
        for slot in range(len(envs)):
            start_episode(slot)
        while any(state is not None for state in slots):
            active = [slot for slot, state in enumerate(slots) if state is not None]
            inputs = [_agent_input(envs[slot], slots[slot].observation, prompt_template,
                                   with_expert=agent.uses_expert_action) for slot in active]
            answers = agent.respond(inputs)
            if len(answers) != len(inputs):
                raise RuntimeError(
                    f"agent {agent.name!r} returned {len(answers)} answers for {len(inputs)} "
                    "inputs; respond() must return exactly one answer per input"
                )
            for slot, agent_input, answer in zip(active, inputs, answers):
                state = slots[slot]
                parsed = parse_action(answer, agent_input.legal_actions)
                action = resolve_action(parsed, agent_input.legal_actions, policy, state.rng)
                observation, reward, terminated, truncated, info = envs[slot].step(action.index)
                state.observation = observation
                state.episode_return += float(reward) + action.reward_adjustment
                state.length += 1
                state.invalid_steps += int(action.invalid)
                if terminated or truncated:
                    if "success" not in info:
                        raise KeyError(
                            f"{env_id}'s step info has no 'success' entry; every environment "
                            "evaluated here must report it (see docs/CONTRACTS.md)"
                        )
                    records[state.episode] = EpisodeRecord(
                        episode=state.episode, seed=state.seed,
                        success=bool(info["success"]),
                        episode_return=state.episode_return, length=state.length,
                        invalid_steps=state.invalid_steps,
                    )
                    bar.update(1)
                    start_episode(slot)
    finally:
        bar.close()
        for env in envs:
            env.close()
    finished = [record for record in records if record is not None]
    return EvalResult.from_records(method, env_id, prompt_template.cot, finished,
                                   agent.usage() - usage_before, show_state=show_state,
                                   invalid_action=policy.mode)


class _NoProgress:
    """Stands in for a tqdm bar when none is shown, so the loop needs no tqdm (the agent extra)."""

    def update(self, count: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def _progress_bar(total: int, description: str, *, enabled: bool) -> Any:
    """A tqdm bar over episodes, or a silent stand-in without importing tqdm."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="episode")


def _invalid_action_policy(policy: Any) -> Any:
    """An ``InvalidActionPolicy`` from itself or from its mode name (``"random"``, ``"penalty"``)."""
    from vlm_agent.parsing import InvalidActionPolicy

    if isinstance(policy, InvalidActionPolicy):
        return policy
    if policy not in ("random", "penalty"):
        raise ValueError(
            f"unknown invalid-action policy {policy!r}: use 'random' (a random legal move, as in "
            "the paper), 'penalty', or a vlm_agent.parsing.InvalidActionPolicy"
        )
    return InvalidActionPolicy(mode=policy)


# --------------------------------------------------------------------------------------------
# Results tables and plot (the paper's layout: rows = methods, columns = environments)
# --------------------------------------------------------------------------------------------


def env_short_name(env_id: str) -> str:
    """Column title of an environment: ``"gym_cards/NumberLine-v0"`` -> ``"NumberLine"``."""
    name = env_id.rsplit("/", 1)[-1]
    return name.rsplit("-v", 1)[0]


def _ordered(values: Sequence[str]) -> list[str]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def results_markdown(results: Sequence[EvalResult], title: str = "Evaluation") -> str:
    """Markdown table, one row per method and one column per environment.

    Each cell reads ``success% [95% interval] · invalid% · n``; a missing (method, env) pair is
    ``–``. A second table lists tokens spent, for API methods.
    """
    methods = _ordered([result.method for result in results])
    env_ids = _ordered([result.env_id for result in results])
    by_key = {(result.method, result.env_id): result for result in results}
    lines = [
        f"# {title}",
        "",
        (
            "Episode success rate in % with its Wilson 95% interval, the share of steps whose "
            "answer named no single legal action (invalid), and the number of episodes (n). "
            f"Episodes use held-out seeds ({EVAL_SEED_OFFSET:,} + seed + episode)."
        ),
        "",
        "| method | " + " | ".join(env_short_name(env_id) for env_id in env_ids) + " |",
        "|---|" + "---|" * len(env_ids),
    ]
    for method in methods:
        cells = []
        for env_id in env_ids:
            result = by_key.get((method, env_id))
            if result is None:
                cells.append("–")
                continue
            low, high = result.ci95
            cells.append(
                f"{100 * result.success_rate:.1f} [{100 * low:.1f}, {100 * high:.1f}] · "
                f"invalid {100 * result.invalid_rate:.1f}% · n={result.episodes}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    spent = [result for result in results if result.usage.requests or result.usage.cache_hits]
    if spent:
        lines += [
            "",
            "| method | env | requests | cache hits | retries | prompt tokens | completion tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for result in spent:
            usage = result.usage
            lines.append(
                f"| {result.method} | {env_short_name(result.env_id)} | {usage.requests} | "
                f"{usage.cache_hits} | {usage.retries} | {usage.prompt_tokens} | "
                f"{usage.completion_tokens} |"
            )
    settings = _ordered([f"cot={result.cot}, show_state={result.show_state}, "
                         f"invalid answers: {result.invalid_action}" for result in results])
    lines += ["", f"Prompting: {'; '.join(settings)}.", ""]
    return "\n".join(lines)


def results_csv(results: Sequence[EvalResult]) -> str:
    """CSV text, one row per (method, environment) with every headline number."""
    buffer = io.StringIO()
    rows = [result.summary() for result in results]
    fieldnames = list(rows[0]) if rows else list(_EMPTY_SUMMARY_FIELDS)
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


_EMPTY_SUMMARY_FIELDS = ("method", "env_id", "episodes", "success_rate")


def plot_success_rates(results: Sequence[EvalResult], path: str | Path,
                       title: str = "Episode success rate") -> Path:
    """Grouped bar chart (environments on x, one bar per method) with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = _ordered([result.method for result in results])
    env_ids = _ordered([result.env_id for result in results])
    by_key = {(result.method, result.env_id): result for result in results}
    width = 0.8 / max(1, len(methods))
    figure, axes = plt.subplots(figsize=(3.2 + 1.9 * len(env_ids), 4.0))
    for index, method in enumerate(methods):
        positions, heights, lower, upper = [], [], [], []
        for env_index, env_id in enumerate(env_ids):
            result = by_key.get((method, env_id))
            if result is None:
                continue
            positions.append(env_index + (index - (len(methods) - 1) / 2) * width)
            heights.append(100 * result.success_rate)
            lower.append(max(0.0, 100 * (result.success_rate - result.ci95[0])))
            upper.append(max(0.0, 100 * (result.ci95[1] - result.success_rate)))
        axes.bar(positions, heights, width=width, label=method, yerr=[lower, upper], capsize=3)
    axes.set_xticks(range(len(env_ids)), [env_short_name(env_id) for env_id in env_ids])
    axes.set_ylabel("success rate (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results(results: Sequence[EvalResult], out_dir: str | Path, stem: str,
                  title: str = "Evaluation") -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv``, ``<stem>.png`` and per-episode ``<stem>.json``.

    Returns:
        The written paths by suffix (``"md"``, ``"csv"``, ``"png"``, ``"json"``).
    """
    if not results:
        raise ValueError("write_results needs at least one result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out / f"{stem}.{suffix}" for suffix in ("md", "csv", "png", "json")}
    paths["md"].write_text(results_markdown(results, title), encoding="utf-8")
    paths["csv"].write_text(results_csv(results), encoding="utf-8")
    plot_success_rates(results, paths["png"], title=title)
    episodes = [
        {**result.summary(), "records": [dataclasses.asdict(record) for record in result.records]}
        for result in results
    ]
    paths["json"].write_text(json.dumps(episodes) + "\n", encoding="utf-8")
    return paths


# --------------------------------------------------------------------------------------------
# One call for command lines: build agents from method specs, evaluate, write the tables
# --------------------------------------------------------------------------------------------

def _invalid_action_policy_of(settings: AgentSettings) -> Any:
    """The :class:`vlm_agent.parsing.InvalidActionPolicy` that fully resolved settings name."""
    from vlm_agent.parsing import InvalidActionPolicy

    return InvalidActionPolicy(mode=settings.invalid_action, fallback=settings.invalid_action_fallback,
                               penalty=float(settings.invalid_action_penalty))


def _prompt_template_of(settings: AgentSettings, env_id: str, explicit: AgentSettings) -> Any:
    """The saved custom template where it is for ``env_id`` and no flag changed the prompt, else None."""
    template = settings.prompt_template
    if template is None or explicit.cot is not None or explicit.show_state is not None:
        return None
    if template.get("env_id") != env_id:
        return None
    from vlm_agent.prompts import template_from_mapping

    return template_from_mapping(template, source="saved prompt_template")


def method_settings(method: str, config: EvalConfig) -> AgentSettings:
    """The settings ``method`` plays with: the config's explicit ones, else the saved policy's, else the paper's."""
    from vlm_agent.baselines.method_spec import saved_agent_settings

    saved = saved_agent_settings(method) or AgentSettings()
    return PAPER_AGENT_SETTINGS.overridden_by(saved).overridden_by(config.agent_settings())


def run_eval(config: EvalConfig) -> tuple[list[EvalResult], dict[str, Path]]:
    """Evaluate every method of ``config`` on every environment and write the results.

    Environment ids and method specs are checked before any agent is built (a typo costs no model
    load). Each method plays with :func:`method_settings`: a saved policy as it was trained,
    unless the config says otherwise. Agents are built once per method (so an API method's cache,
    pool and token counters span all environments) and closed at the end.

    Returns:
        The results in (method, environment) order and the written file paths (see
        :func:`write_results`).
    """
    from vlm_agent.baselines.method_spec import build_agent, default_labels
    from vlm_agent.environments import check_env

    for env_id in config.env_ids:
        check_env(env_id, config.env_kwargs)  # before any agent (a local model) is built (checks the id too)
    labels = default_labels(config.methods)
    explicit = config.agent_settings()
    results: list[EvalResult] = []
    for method, label in zip(config.methods, labels):
        settings = method_settings(method, config)
        agent = build_agent(method, config, settings=settings)
        try:
            for env_id in config.env_ids:
                results.append(evaluate_agent(
                    agent, env_id, episodes=config.episodes, seed=config.seed, cot=settings.cot,
                    invalid_policy=_invalid_action_policy_of(settings), num_envs=config.num_envs,
                    env_kwargs=config.env_kwargs, show_state=settings.show_state,
                    prompt_template=_prompt_template_of(settings, env_id, explicit),
                    progress=config.progress, name=label,
                ))
        finally:
            agent.close()
    paths = write_results(results, config.out_dir, config.stem, config.title)
    return results, paths


# --------------------------------------------------------------------------------------------
# Before / after: what `vlm-agent train` reports at the end of a run
# --------------------------------------------------------------------------------------------

COMPARISON_STEM = "held_out_comparison"
"""File stem of the before/after comparison in a run folder (``.md``, ``.csv``, ``.png``, ``.json``)."""

COMPARISON_ROWS = ("random", "warm start", "trained", "expert")
"""Row names of the comparison, in order: floor, starting point, result, ceiling."""

BLANK_CONTROL_ROW = "trained (blank image)"
"""Row of the trained policy shown blank frames (``blank_control``), after ``trained``."""


def compare_before_after(run_dir: str | Path, *, env_id: str, warm_start: str | Path | None, episodes: int,
                         seed: int, num_envs: int | None = None, env_kwargs: Mapping[str, Any] | None = None,
                         blank_control: bool = False, progress: bool = False) -> tuple[list[EvalResult], dict[str, Path]]:
    """Held-out success of random play, the warm start, the trained policy and the expert.

    The training curve alone cannot say whether PPO helped: it counts only the episodes that end
    during rollouts, under a policy that changes as it learns. This plays the same held-out
    episodes (:func:`held_out_seed`) with each of the four, each policy with the settings it was
    trained with (``agent_settings.json``), and writes ``held_out_comparison.{md,csv,png,json}``
    into ``run_dir`` (``vlm-agent train`` then redraws ``learning_curve.png`` with the four levels).

    Args:
        run_dir: A finished training run (holds ``policy/`` and ``metrics.jsonl``).
        env_id: The environment trained on.
        env_kwargs: Its ``gymnasium.make`` options (those of the run).
        warm_start: The model folder PPO started from (the SFT'd ``base_model`` of the demo);
            None leaves its row out (a model given by hub id).
        episodes: Held-out episodes per row.
        seed: Run seed of the held-out episodes.
        num_envs: Environments side by side (default :data:`vlm_agent.eval_config.DEFAULT_NUM_ENVS`).
        blank_control: Add :data:`BLANK_CONTROL_ROW`, the trained policy shown blank frames: for a
            policy that sees the image alone, what it wins without reading it.
        progress: Show progress bars.

    Returns:
        The results in :data:`COMPARISON_ROWS` order (:data:`BLANK_CONTROL_ROW` after ``trained``)
        and the written paths.
    """
    run_dir = Path(run_dir)
    random_name, warm_name, trained_name, expert_name = COMPARISON_ROWS
    methods = [f"{random_name}=random", f"{warm_name}=local:{warm_start}", f"{trained_name}=local:{run_dir}",
               f"{expert_name}=expert"]
    if blank_control:
        methods.insert(3, f"{BLANK_CONTROL_ROW}=blank:local:{run_dir}")
    config = EvalConfig(
        methods=[method for method in methods if warm_start is not None or not method.startswith(warm_name)],
        env_ids=[env_id], episodes=episodes, seed=seed, num_envs=num_envs or DEFAULT_NUM_ENVS,
        env_kwargs=dict(env_kwargs or {}), out_dir=str(run_dir), stem=COMPARISON_STEM,
        title=f"Held-out success before and after PPO ({env_short_name(env_id)})", progress=progress,
    )
    return run_eval(config)
