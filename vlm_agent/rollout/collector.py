"""Collect PPO rollouts: the one loop (:mod:`vlm_agent.rollout.loop`) played by a rollout engine,
kept as transitions.

One transition is one environment step: the whole generated answer is one action, scored by its
CoT-scaled log-probability (see :mod:`vlm_agent.algorithms.cot_log_prob`). When an episode ends,
the loop first reads the final state (for truncated episodes, the view whose value GAE bootstraps
from) and only then resets that environment. Episodes run on across updates
(:class:`~vlm_agent.rollout.loop.ContinuingEpisodes`), and their state is saved as data: how each
episode started and its actions since (:mod:`vlm_agent.rollout.env_state`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlm_agent.models.batching import PolicySample
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
from vlm_agent.prompting.templates import HistoryEntry, history_action
from vlm_agent.rollout.engine import RolloutEngine
from vlm_agent.rollout.env_state import (
    EnvStateError,
    EpisodeLog,
    observation_fingerprint,
    replay_episode,
    rng_state,
)
from vlm_agent.rollout.environments import check_env
from vlm_agent.rollout.loop import (
    AgentLoop,
    ContinuingEpisodes,
    EpisodeRecord,
    make_env,
)


@dataclass
class Rollout:
    """One update's worth of transitions; tensors are `[T, N]` (steps x environments).

    `samples[t][n]` is what the policy generated at step t in environment n. `next_values[t, n]`
    is the value of the observation after that step (the final observation when the episode
    ended there; 0 when it terminated), ready for `ppo_math.compute_gae`.
    """

    samples: list[list[PolicySample]]
    rewards: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    next_values: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    invalid: torch.Tensor

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    def flat_samples(self) -> list[PolicySample]:
        """Samples in `[T, N]` row-major order, matching `tensor.reshape(-1)`."""
        return [sample for row in self.samples for sample in row]


@dataclass
class RolloutStats:
    """Counters of one `collect` call."""

    episodes: list[EpisodeRecord] = field(default_factory=list)
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    seconds: float = 0.0
    sample_logs: list[dict[str, Any]] = field(default_factory=list)


#: Version of `RolloutCollector.state_dict`'s layout.
COLLECTOR_STATE_FORMAT = 1


class RolloutCollector:
    """Steps N environments with a rollout engine, keeping episodes running across updates.

    Observations may be image arrays or mappings holding an ``"image"`` (ALFWorld); the prompt
    text and the legal actions are read from each environment every step (`describe()`,
    `legal_actions()`), so actions that change from step to step (ALFWorld's admissible
    commands) are offered as they are now.

    Args:
        env_id: Gymnasium id.
        num_envs: Environments in this process.
        seed: Seed of the first reset of environment i is `seed + i` (the trainer offsets it by rank).
        engine: The engine that acts (:class:`~vlm_agent.rollout.engine.HFEngine`, or the vLLM one); its policy's
            value head bootstraps truncated episodes.
        prompt_template: `vlm_agent.prompting.env_prompts.prompt_for(env_id, cot=...)`.
        invalid_policy: What an unusable answer executes.
        rng: Resolves unusable answers with the paper's random move; it must be the engine's own
            generator (``engine.rng``, the default), which draws the sampling seeds, so that one
            generator decides a run's rollouts.
        env_kwargs: Keyword arguments of `gym.make`.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int,
        engine: RolloutEngine,
        prompt_template: Any,
        invalid_policy: InvalidActionPolicy,
        rng: np.random.Generator | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_env(env_id, env_kwargs)
        if rng is not None and rng is not engine.rng:
            raise ValueError("RolloutCollector's rng must be the engine's own generator (engine.rng)")
        rng = engine.rng
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.engine = engine
        self.num_envs = num_envs
        self.schedule = ContinuingEpisodes([seed + i for i in range(num_envs)], rng)
        envs = [make_env(env_id, self.env_kwargs) for _ in range(num_envs)]
        self.loop = AgentLoop(envs, prompt_template, invalid_policy, self.schedule)

    def _state_values(self, inputs: list[Any]) -> torch.Tensor:
        return self.engine.policy.state_values([i.image for i in inputs], [i.prompt for i in inputs]).double()

    def collect(
        self, num_steps: int, *, log_samples: int = 0, on_step: Callable[[int], None] | None = None
    ) -> tuple[Rollout, RolloutStats]:
        """Run `num_steps` steps in every environment and return the transitions and episode stats."""
        started = time.perf_counter()
        n = self.num_envs
        shape = (num_steps, n)
        rewards = torch.zeros(shape, dtype=torch.float64)
        values = torch.zeros(shape, dtype=torch.float64)
        log_probs = torch.zeros(shape, dtype=torch.float64)
        next_values = torch.zeros(shape, dtype=torch.float64)
        terminated = torch.zeros(shape, dtype=torch.bool)
        truncated = torch.zeros(shape, dtype=torch.bool)
        invalid = torch.zeros(shape, dtype=torch.bool)
        samples: list[list[PolicySample]] = []
        stats = RolloutStats()
        seconds_before = self.engine.generation_seconds
        tokens_before = self.engine.usage().completion_tokens

        for step in range(num_steps):
            steps = self.loop.step(self.engine)
            samples.append([s.answer for s in steps])
            rewards[step] = torch.tensor([s.reward for s in steps], dtype=torch.float64)
            values[step] = torch.tensor([s.answer.value for s in steps], dtype=torch.float64)
            log_probs[step] = torch.tensor([s.answer.log_prob for s in steps], dtype=torch.float64)
            terminated[step] = torch.tensor([s.terminated for s in steps])
            truncated[step] = torch.tensor([s.truncated for s in steps])
            invalid[step] = torch.tensor([s.action.invalid for s in steps])
            for s in steps[: max(0, log_samples - len(stats.sample_logs))]:
                legal = s.agent_input.legal_actions
                stats.sample_logs.append(
                    {
                        "step": step,
                        "env": s.slot,
                        "prompt": s.agent_input.prompt,
                        "answer": s.text,
                        "parsed_action": legal[s.parsed.index] if s.parsed.index is not None else None,
                        "parse_error": s.parsed.error,
                        "executed_action": history_action(legal, s.action.index),
                        "reward": float(s.reward),
                    }
                )
            cut = [s for s in steps if s.final_input is not None]
            if cut:
                # Time limit: the final state still has a future; its value was estimated before the reset.
                indices = torch.tensor([s.slot for s in cut])
                next_values[step, indices] = self._state_values([s.final_input for s in cut])
            stats.episodes.extend(s.episode for s in steps if s.episode is not None)
            if step > 0:
                # The value of this step's observation is the bootstrap of the previous step.
                continuing = ~(terminated[step - 1] | truncated[step - 1])
                next_values[step - 1] = torch.where(continuing, values[step], next_values[step - 1])
            if on_step is not None:
                on_step(n)

        last_done = terminated[-1] | truncated[-1]
        if not bool(last_done.all()):
            bootstrap = self._state_values(self.loop.observe())
            next_values[-1] = torch.where(last_done, next_values[-1], bootstrap)
        stats.generation_seconds = self.engine.generation_seconds - seconds_before
        stats.generated_tokens = self.engine.usage().completion_tokens - tokens_before
        stats.seconds = time.perf_counter() - started
        rollout = Rollout(
            samples=samples,
            rewards=rewards,
            values=values,
            log_probs=log_probs,
            next_values=next_values,
            terminated=terminated,
            truncated=truncated,
            invalid=invalid,
        )
        return rollout, stats

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the episodes exactly, as JSON data (see `vlm_agent.rollout.env_state`).

        Per environment: how its episode started, the actions since, and for checking the replay
        its generator state and a SHA-256 of its current observation; plus the episode counters.
        """
        environments = []
        progress = [self.loop.progress(i) for i in range(self.num_envs)]
        for i, env in enumerate(self.loop.envs):
            environments.append(
                {
                    "episode": self.schedule.logs[i].to_json(),
                    "rng": rng_state(env),
                    "observation_sha256": observation_fingerprint(self.loop.observation(i), env),
                }
            )
        return {
            "format": COLLECTOR_STATE_FORMAT,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "environments": environments,
            "episode_returns": [float(r) for r, _, _ in progress],
            "episode_lengths": [int(length) for _, length, _ in progress],
            "episode_invalid": [int(bad) for _, _, bad in progress],
            # The prompt's memory of each running episode (empty lists without history_steps).
            "episode_history": [[[entry.observation, entry.action] for entry in self.loop.history(i)]
                                for i in range(self.num_envs)],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the episodes written by `state_dict` by replaying them, and restore the counters.

        Raises:
            EnvStateError: A state of another format or environment count, or a replay that does
                not reproduce the saved observation and generator state.
        """
        if not isinstance(state, Mapping) or state.get("format") != COLLECTOR_STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise EnvStateError(f"environment state has format {found!r}, this version reads {COLLECTOR_STATE_FORMAT}")
        environments = state["environments"]
        if len(environments) != self.num_envs:
            raise EnvStateError(
                f"checkpoint holds {len(environments)} environments, this run has num_envs={self.num_envs}"
            )
        restored = []
        for i, (env, saved) in enumerate(zip(self.loop.envs, environments)):
            log = EpisodeLog.from_json(saved["episode"])
            observation, _ = replay_episode(env, log)
            if rng_state(env) != saved["rng"]:
                raise EnvStateError(
                    f"environment {i}: its generator after replaying the saved episode differs from the checkpoint's; "
                    "its randomness does not all come from env.np_random, so it cannot be resumed exactly"
                )
            if observation_fingerprint(observation, env) != saved["observation_sha256"]:
                raise EnvStateError(
                    f"environment {i}: replaying the saved episode gave a different observation than the checkpoint's; "
                    "resume with the same environment version and env_kwargs"
                )
            restored.append((observation, log))
        histories = state.get("episode_history") or [[] for _ in range(self.num_envs)]
        for i, (observation, log) in enumerate(restored):
            self.schedule.restore(i, log)
            self.loop.restore(i, observation, float(state["episode_returns"][i]), int(state["episode_lengths"][i]),
                              int(state["episode_invalid"][i]),
                              [HistoryEntry(str(text), str(action)) for text, action in histories[i]])

    def close(self) -> None:
        self.loop.close()
