"""Evaluate any agent on the gym_cards environments with the trainer's prompts and parser.

The evaluation loop is the same loop the trainer rolls out (environment -> prompt -> answer text ->
parse -> step), but the "answer text" comes from any :class:`Agent`: a prompted API model
(OpenAI-compatible or Gemini), a local Hugging Face policy, a random player or the environment's
expert. Because every agent sees the same prompt (:func:`vlm_agent.prompting.env_prompts.prompt_for`) and every
answer goes through the same parser (:func:`vlm_agent.prompting.parsing.parse_action`), the success rates of
prompted frontier models and of our RL-trained agent compare like for like, as in Table 1 of the
RL4VLM paper.

Seeds. Evaluation episodes are held out from training: episode ``i`` of a run with seed ``s``
resets its environment with ``held_out_seed(s, i) = EVAL_SEED_OFFSET + s + i`` where
``EVAL_SEED_OFFSET = 1_000_000_000``. Training seeds each environment once with a small seed
(``seed + env_index``, :mod:`vlm_agent.rollout.collector`) and then follows its generator, so no
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

    from vlm_agent.agents.simple import ExpertAgent
    from vlm_agent.evaluation.evaluate import evaluate_agent

    result = evaluate_agent(ExpertAgent(), "gym_cards/NumberLine-v0", episodes=50, seed=0)
    print(result.success_rate, result.ci95)

This module imports neither torch nor any API client; tqdm only when a progress bar is shown and
matplotlib only when a plot is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_agent.agents.settings import PAPER_AGENT_SETTINGS, AgentSettings
from vlm_agent.evaluation.eval_config import DEFAULT_NUM_ENVS, EvalConfig
from vlm_agent.rollout.agent import Agent
from vlm_agent.rollout.environments import validate_env_id

if TYPE_CHECKING:
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
    from vlm_agent.prompting.templates import PromptTemplate
from vlm_agent.evaluation.results import EvalResult
from vlm_agent.evaluation.tables import write_results
from vlm_agent.rollout.loop import (
    AgentLoop,
    EpisodeRecord,
    HeldOutEpisodes,
    make_env,
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
    history_steps: int = 0,
) -> EvalResult:
    """Play ``episodes`` held-out episodes of ``env_id`` with ``agent`` and summarise them.

    Each step, every running environment's image, prompt (``prompt_for(env_id, cot=cot)``
    rendered with ``describe()`` and ``legal_actions()``) and, for agents that use it, the
    expert move go to the agent in one batch; each answer goes through
    :func:`vlm_agent.prompting.parsing.parse_action`, and unusable ones are resolved with ``invalid_policy``
    (:func:`vlm_agent.prompting.invalid_actions.resolve_action`), exactly as in training. An episode succeeds when
    its last step's ``info["success"]`` is true.

    Args:
        agent: Any :class:`Agent`.
        env_id: Gymnasium id, e.g. ``"gym_cards/NumberLine-v0"``.
        episodes: Number of episodes to play (> 0).
        seed: Run seed; episode ``i`` resets with :func:`held_out_seed` ``(seed, i)``.
        cot: Ask for chain-of-thought (``{"thoughts", "action"}``) instead of action only.
        invalid_policy: What an unusable answer does: an
            :class:`vlm_agent.prompting.invalid_actions.InvalidActionPolicy` or its mode, ``"random"`` (a uniformly
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
            :func:`vlm_agent.prompting.templates.load_prompt_template`).
        progress: Show a tqdm bar over episodes (False: tqdm is not imported).
        name: Row name of the result; default ``agent.name``.
        history_steps: Earlier steps of the episode each prompt recalls (K; ignored when
            ``prompt_template`` is given: the template's own ``history_steps`` counts).

    Returns:
        The :class:`EvalResult`, with per-episode records in episode order.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    if num_envs <= 0:
        raise ValueError(f"num_envs must be positive, got {num_envs}")
    from vlm_agent.prompting.env_prompts import prompt_for

    validate_env_id(env_id)
    policy = _invalid_action_policy(invalid_policy)
    if prompt_template is None:
        prompt_template = prompt_for(env_id, cot=cot, show_state=show_state, history_steps=history_steps)
    envs = [make_env(env_id, env_kwargs) for _ in range(min(num_envs, episodes))]
    usage_before = agent.usage()
    records: list[EpisodeRecord | None] = [None] * episodes
    method = agent.name if name is None else name
    bar = _progress_bar(episodes, f"{method} on {env_id}", enabled=progress)
    loop = AgentLoop(envs, prompt_template, policy, HeldOutEpisodes(episodes, seed))
    try:
        while loop.active:
            for step in loop.step(agent):
                if step.episode is not None:
                    records[step.episode.episode] = step.episode
                    bar.update(1)
    finally:
        bar.close()
        loop.close()
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
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy

    if isinstance(policy, InvalidActionPolicy):
        return policy
    if policy not in ("random", "penalty", "nothing"):
        raise ValueError(
            f"unknown invalid-action policy {policy!r}: use 'random' (a random legal move, as in "
            "the paper), 'penalty', 'nothing', or a vlm_agent.prompting.invalid_actions.InvalidActionPolicy"
        )
    return InvalidActionPolicy(mode=policy)


# --------------------------------------------------------------------------------------------
# One call for command lines: build agents from method specs, evaluate, write the tables
# --------------------------------------------------------------------------------------------

def _invalid_action_policy_of(settings: AgentSettings) -> Any:
    """The :class:`vlm_agent.prompting.invalid_actions.InvalidActionPolicy` that fully resolved settings name."""
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy

    return InvalidActionPolicy(mode=settings.invalid_action, fallback=settings.invalid_action_fallback,
                               penalty=float(settings.invalid_action_penalty))


def _prompt_template_of(settings: AgentSettings, env_id: str, explicit: AgentSettings) -> Any:
    """The saved custom template where it is for ``env_id`` and no flag changed the prompt, else None."""
    template = settings.prompt_template
    if template is None or explicit.cot is not None or explicit.show_state is not None:
        return None
    if template.get("env_id") != env_id:
        return None
    from vlm_agent.prompting.templates import template_from_mapping

    return dataclasses.replace(template_from_mapping(template, source="saved prompt_template"),
                               history_steps=settings.history_steps or 0)


def method_settings(method: str, config: EvalConfig) -> AgentSettings:
    """The settings ``method`` plays with: the config's explicit ones, else the saved policy's, else the paper's."""
    from vlm_agent.evaluation.method_spec import saved_agent_settings

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
    from vlm_agent.evaluation.method_spec import build_agent, default_labels
    from vlm_agent.rollout.environments import check_env, check_invalid_action

    for env_id in config.env_ids:
        check_env(env_id, config.env_kwargs)  # before any agent (a local model) is built (checks the id too)
    labels = default_labels(config.methods)
    explicit = config.agent_settings()
    results: list[EvalResult] = []
    settings_of = {method: method_settings(method, config) for method in config.methods}
    for env_id in config.env_ids:  # a rule the env cannot play is refused before any agent is built
        for settings in settings_of.values():
            check_invalid_action(env_id, settings.invalid_action)
    for method, label in zip(config.methods, labels):
        settings = settings_of[method]
        agent = build_agent(method, config, settings=settings)
        try:
            for env_id in config.env_ids:
                results.append(evaluate_agent(
                    agent, env_id, episodes=config.episodes, seed=config.seed, cot=settings.cot,
                    invalid_policy=_invalid_action_policy_of(settings), num_envs=config.num_envs,
                    env_kwargs=config.env_kwargs, show_state=settings.show_state,
                    prompt_template=_prompt_template_of(settings, env_id, explicit),
                    progress=config.progress, name=label, history_steps=settings.history_steps,
                ))
        finally:
            agent.close()
    paths = write_results(results, config.out_dir, config.stem, config.title)
    return results, paths
