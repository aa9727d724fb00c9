"""The one loop: environments -> prompt -> agent -> parse -> step.

Training's rollouts (:mod:`vlm_agent.rollout.collector`), ``vlm-agent eval`` and the closing
comparison (:mod:`vlm_agent.evaluation.evaluate`) and SFT's demonstrations
(:mod:`vlm_agent.training.sft`) all play the environments through :class:`AgentLoop`; evaluation
is the loop without learning. Each step of :meth:`AgentLoop.step`:

1. every running environment's image, prompt (the template rendered with ``describe()``,
   ``legal_actions()`` and the episode's memory: its last ``history_steps`` steps, each the state's
   text and the action executed there, emptied when an episode starts) and, for agents that read
   it, the expert move go to the agent in one batch (:class:`~vlm_agent.rollout.agent.AgentInput`);
2. each answer is parsed (:func:`vlm_agent.prompting.parsing.parse_action`) and an unusable one is
   resolved by the run's :class:`~vlm_agent.prompting.invalid_actions.InvalidActionPolicy`: the
   only place the invalid-answer rule is applied;
3. every environment steps, in order; an episode that ended is recorded
   (:class:`EpisodeRecord`) and its environment starts the next one as the
   :class:`EpisodeSchedule` says.

What differs between the users is only *which* episodes are played (:class:`HeldOutEpisodes`:
numbered episodes from held-out seeds, each with its own rescue generator;
:class:`ContinuingEpisodes`: training's endless episodes, seeded once) and what they keep of each
:class:`Step`.

Seeds. Evaluation episodes are held out from training: episode ``i`` of a run with seed ``s``
resets its environment with ``held_out_seed(s, i) = EVAL_SEED_OFFSET + s + i`` where
``EVAL_SEED_OFFSET = 1_000_000_000``. Training seeds each environment once with a small seed
(``seed + env_index``) and then follows its generator, so no evaluation episode starts from a
training seed as long as training seeds stay below 10**9 (small games such as NumberLine, with 30
start states, of course repeat states; held-out seeds keep the deal sequence independent, not the
state space).

Each evaluation episode's fallback random moves (the paper's answer to unusable text) draw from
:func:`rescue_generator`: a child (``SeedSequence.spawn``) of the seed sequence that gymnasium
deals the episode from, so the rescue is reproducible, does not depend on ``num_envs`` for
deterministic agents, and is statistically independent of the deal. (Seeding it with the episode
seed itself replayed the deal's own random stream: on NumberLine the first rescue was the right
move in 81% of episodes, and an agent whose every answer was unusable beat random play.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vlm_agent.prompting.invalid_actions import (
    InvalidActionPolicy,
    ResolvedAction,
    resolve_action,
)
from vlm_agent.prompting.parsing import ParsedAction, parse_action
from vlm_agent.prompting.templates import HistoryEntry, PromptTemplate, history_action
from vlm_agent.rollout.agent import Agent, AgentInput
from vlm_agent.rollout.env_state import EpisodeLog, action_text, game_of, rng_state
from vlm_agent.rollout.environments import check_invalid_action, observation_image, validate_env_id

EVAL_SEED_OFFSET = 1_000_000_000
"""Added to every evaluation seed so that evaluation episodes never reuse a training seed."""


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


def make_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build one environment by id, with an error that suggests the right id if it is unknown."""
    import gymnasium as gym

    validate_env_id(env_id)
    try:
        return gym.make(env_id, **dict(env_kwargs or {}))
    except (gym.error.Error, TypeError) as error:
        raise ValueError(f"cannot build environment {env_id!r} with env_kwargs {dict(env_kwargs or {})}: "
                         f"{error}") from error


# --------------------------------------------------------------------------------------------
# What the loop records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeRecord:
    """The outcome of one episode.

    Attributes:
        episode: Episode index within the run (0-based; for training's continuing episodes, the
            count of episodes that environment finished before).
        seed: The seed the environment was reset with (None: an unseeded reset that continues the
            environment's generator, as training's episodes after the first).
        success: ``info["success"]`` at the episode's last step.
        episode_return: Sum of rewards, invalid-answer penalties included.
        length: Number of steps.
        invalid_steps: Steps whose answer named no single legal action.
    """

    episode: int
    seed: int | None
    success: bool
    episode_return: float
    length: int
    invalid_steps: int


@dataclass
class Step:
    """What happened in one environment at one step of the loop.

    Attributes:
        slot: The environment's index in the loop.
        agent_input: What the agent was shown.
        answer: What the agent returned for it (its text, or a generated sample with ``.text``).
        text: The answer's text.
        parsed: The parser's reading of it.
        action: The executed action (``index``; ``invalid`` and ``reward_adjustment`` of the
            invalid-answer rule).
        reward: The environment's reward plus the adjustment.
        terminated, truncated: As the environment returned them.
        info: The environment's ``info`` after the step (ALFWorld's ``won`` and
            ``goal_condition_success_rate`` are read from the last one).
        episode: The finished episode's record when it ended at this step.
        final_input: For an episode cut by the time limit (truncated, not terminated): the agent's
            view of its final state, whose value a learner bootstraps from. None otherwise.
    """

    slot: int
    agent_input: AgentInput
    answer: Any
    text: str
    parsed: ParsedAction
    action: ResolvedAction
    reward: float
    terminated: bool
    truncated: bool
    info: Mapping[str, Any] = field(default_factory=dict)
    episode: EpisodeRecord | None = None
    final_input: AgentInput | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def answer_text(answer: Any) -> str:
    """The text of an agent's answer: the answer itself, or its ``.text`` (a generated sample)."""
    return answer if isinstance(answer, str) else answer.text


# --------------------------------------------------------------------------------------------
# Which episodes are played
# --------------------------------------------------------------------------------------------


@dataclass
class EpisodeStart:
    """How one environment's episode began: its first observation and info, its reset seed and
    the generator that resolves its unusable answers."""

    observation: Any
    info: Mapping[str, Any]
    episode: int
    seed: int | None
    rescue_rng: np.random.Generator


class EpisodeSchedule(Protocol):
    """Decides what each environment plays next; None ends that environment's play."""

    def start(self, slot: int, env: Any) -> EpisodeStart | None:
        """Reset ``env`` (the loop's environment ``slot``) for its next episode, or return None."""
        ...

    def record(self, slot: int, action: int, command: str) -> None:
        """Environment ``slot`` is about to execute legal action ``action`` (whose text is ``command``)."""
        ...


class HeldOutEpisodes:
    """``episodes`` numbered episodes, episode ``i`` reset with ``seed_of(seed, i)`` (default
    :func:`held_out_seed`) and resolved by :func:`rescue_generator` of that seed (or by one shared
    ``rescue_rng``); environments take the next unplayed episode in the order they become free."""

    def __init__(self, episodes: int, seed: int,
                 seed_of: Callable[[int, int], int] = held_out_seed, rescue_rng: np.random.Generator | None = None) -> None:
        self.episodes = episodes
        self.seed = seed
        self.seed_of = seed_of
        self.rescue_rng = rescue_rng
        self.started = 0

    def start(self, slot: int, env: Any) -> EpisodeStart | None:
        if self.started >= self.episodes:
            return None
        episode_seed = self.seed_of(self.seed, self.started)
        observation, info = env.reset(seed=episode_seed)
        rescue = self.rescue_rng if self.rescue_rng is not None else rescue_generator(episode_seed)
        start = EpisodeStart(observation, info, self.started, episode_seed, rescue)
        self.started += 1
        return start

    def record(self, slot: int, action: int, command: str) -> None:
        """Held-out episodes keep no log of their actions."""


class ContinuingEpisodes:
    """Training's episodes: environment ``i`` is reset once with ``seeds[i]``, then each new episode
    continues its generator (an unseeded reset); unusable answers are resolved by the one ``rng``.

    ``logs[i]`` is how environment ``i``'s current episode started (its reset seed, or its generator
    before an unseeded reset), the checkpointed environment state (:mod:`vlm_agent.rollout.env_state`);
    the loop's caller appends each step's action to it.
    """

    def __init__(self, seeds: Sequence[int], rng: np.random.Generator) -> None:
        self.seeds = list(seeds)
        self.rng = rng
        self.logs: list[EpisodeLog] = [EpisodeLog() for _ in self.seeds]
        self.finished = [0] * len(self.seeds)
        self._seeded = [False] * len(self.seeds)

    def start(self, slot: int, env: Any) -> EpisodeStart:
        if not self._seeded[slot]:
            self._seeded[slot] = True
            seed: int | None = self.seeds[slot]
            log = EpisodeLog(reset_seed=seed)
            observation, info = env.reset(seed=seed)
        else:
            seed = None
            self.finished[slot] += 1
            # The next episode starts from the generator as it is now (an unseeded reset).
            log = EpisodeLog(rng_before_reset=rng_state(env))
            observation, info = env.reset()
        log.game = game_of(info)
        self.logs[slot] = log
        return EpisodeStart(observation, info, self.finished[slot], seed, self.rng)

    def record(self, slot: int, action: int, command: str) -> None:
        """Append the action to the episode's log (what a resumed run replays)."""
        self.logs[slot].actions.append(int(action))
        self.logs[slot].commands.append(str(command))

    def restore(self, slot: int, log: EpisodeLog) -> None:
        """Environment ``slot`` continues the episode ``log`` (replayed into it by the caller)."""
        self._seeded[slot] = True
        self.logs[slot] = log


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class _Episode:
    """Book-keeping of the episode running in one environment."""

    start: EpisodeStart
    observation: Any
    info: Mapping[str, Any]
    episode_return: float = 0.0
    length: int = 0
    invalid_steps: int = 0
    history: list[HistoryEntry] = field(default_factory=list)


@dataclass
class AgentLoop:
    """Steps environments with any :class:`~vlm_agent.rollout.agent.Agent`.

    Args:
        envs: The environments (``gym.make`` results), stepped in order.
        prompt_template: Renders each state's prompt (:func:`vlm_agent.prompting.env_prompts.prompt_for`).
        invalid_policy: What an unusable answer executes.
        schedule: Which episode each environment plays next.
    """

    envs: Sequence[Any]
    prompt_template: PromptTemplate
    invalid_policy: InvalidActionPolicy
    schedule: EpisodeSchedule
    _episodes: list[_Episode | None] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        for env in self.envs:
            spec = getattr(env, "spec", None)
            if spec is not None:
                check_invalid_action(spec.id, self.invalid_policy.mode)
        self._episodes = [None] * len(self.envs)
        for slot in range(len(self.envs)):
            self._start(slot)

    def _start(self, slot: int) -> None:
        start = self.schedule.start(slot, self.envs[slot])
        self._episodes[slot] = None if start is None else _Episode(start, start.observation, start.info)

    @property
    def active(self) -> list[int]:
        """The environments whose episode is running."""
        return [slot for slot, episode in enumerate(self._episodes) if episode is not None]

    def observation(self, slot: int) -> Any:
        """The current observation of environment ``slot`` (as the environment returned it)."""
        episode = self._episodes[slot]
        if episode is None:
            raise ValueError(f"environment {slot} has no running episode")
        return episode.observation

    def progress(self, slot: int) -> tuple[float, int, int]:
        """The running episode's return so far, its length and its unusable answers."""
        episode = self._episodes[slot]
        if episode is None:
            raise ValueError(f"environment {slot} has no running episode")
        return episode.episode_return, episode.length, episode.invalid_steps

    def history(self, slot: int) -> list[HistoryEntry]:
        """The memory of environment ``slot``'s running episode (at most ``history_steps`` entries)."""
        episode = self._episodes[slot]
        if episode is None:
            raise ValueError(f"environment {slot} has no running episode")
        return list(episode.history)

    def restore(self, slot: int, observation: Any, episode_return: float, length: int, invalid_steps: int,
                history: Sequence[HistoryEntry] = ()) -> None:
        """Environment ``slot`` continues an episode restored by replay: its observation, counters and memory."""
        episode = self._episodes[slot]
        if episode is None:
            raise ValueError(f"environment {slot} has no running episode")
        episode.observation = observation
        episode.episode_return, episode.length, episode.invalid_steps = episode_return, length, invalid_steps
        episode.history = list(history)

    def observe(self, slots: Sequence[int] | None = None, *, with_expert: bool = False) -> list[AgentInput]:
        """The agent's view of each environment in ``slots`` (default: every running one)."""
        return [self._input(slot, self.observation(slot), self._episodes[slot].info, with_expert=with_expert)
                for slot in (self.active if slots is None else slots)]

    def _input(self, slot: int, observation: Any, info: Mapping[str, Any], *, with_expert: bool) -> AgentInput:
        """Build the agent's view of the current state through the env contract (docs/CONTRACTS.md)."""
        unwrapped = self.envs[slot].unwrapped
        legal_actions = list(unwrapped.legal_actions())
        return AgentInput(
            image=observation_image(observation),  # an image array, or a mapping's "image" (ALFWorld)
            prompt=self.prompt_template.render(unwrapped.describe(), legal_actions, self._episodes[slot].history),
            legal_actions=legal_actions,
            expert_action=int(unwrapped.expert_action()) if with_expert else None,
            info=dict(info) if with_expert else None,
        )

    def step(self, agent: Agent) -> list[Step]:
        """One step of every running environment: observe, answer, parse and resolve, step.

        Returns one :class:`Step` per environment that was running, in environment order.
        """
        slots = self.active
        inputs = self.observe(slots, with_expert=agent.uses_expert_action)
        answers = agent.respond(inputs)
        if len(answers) != len(inputs):
            raise RuntimeError(
                f"agent {agent.name!r} returned {len(answers)} answers for {len(inputs)} "
                "inputs; respond() must return exactly one answer per input"
            )
        steps = []
        for slot, agent_input, answer in zip(slots, inputs, answers):
            text = answer_text(answer)
            parsed = parse_action(text, agent_input.legal_actions)
            action = resolve_action(parsed, agent_input.legal_actions, self.invalid_policy,
                                    self._episodes[slot].start.rescue_rng)
            steps.append(Step(slot, agent_input, answer, text, parsed, action, 0.0, False, False))
        for step in steps:
            self.schedule.record(step.slot, step.action.index, action_text(self.envs[step.slot], step.action.index))
        for step in steps:
            episode = self._episodes[step.slot]
            if self.prompt_template.history_steps:
                entry = HistoryEntry(self.envs[step.slot].unwrapped.describe(),
                                     history_action(step.agent_input.legal_actions, step.action.index))
                episode.history = [*episode.history, entry][-self.prompt_template.history_steps:]
            observation, reward, terminated, truncated, info = self.envs[step.slot].step(step.action.index)
            step.reward = float(reward) + step.action.reward_adjustment
            step.terminated, step.truncated, step.info = bool(terminated), bool(truncated), info
            episode.observation, episode.info = observation, info
            episode.episode_return += step.reward
            episode.length += 1
            episode.invalid_steps += int(step.action.invalid)
            if not step.done:
                continue
            if "success" not in info:
                raise KeyError(
                    f"{self.envs[step.slot].spec.id}'s step info has no 'success' entry; every environment "
                    "played here must report it (see docs/CONTRACTS.md)"
                )
            step.episode = EpisodeRecord(
                episode=episode.start.episode, seed=episode.start.seed, success=bool(info["success"]),
                episode_return=episode.episode_return, length=episode.length,
                invalid_steps=episode.invalid_steps,
            )
            if step.truncated and not step.terminated:
                # Time limit: the final state still has a future; keep its view before the reset.
                step.final_input = self._input(step.slot, observation, info, with_expert=False)
        for step in steps:
            if step.done:
                self._start(step.slot)
        return steps

    def close(self) -> None:
        for env in self.envs:
            env.close()
